"""Draw a run's evaluation.json (core.train_form.EvaluationView), the same for every family:
summary metrics, a confusion matrix heatmap, an ROC curve and the per-case table."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core.train_form import EvaluationView


def show_evaluation(view: EvaluationView, key: str) -> None:
    if view.empty:
        return
    st.markdown("**Evaluation on the test split**")
    if view.summary:
        items = list(view.summary.items())
        for start in range(0, len(items), 4):
            cols = st.columns(4)
            for col, (name, value) in zip(cols, items[start:start + 4], strict=False):
                col.metric(name.replace("_", " "), f"{value:.4g}")
    charts = [c for c in (view.matrix is not None, view.roc is not None) if c]
    cols = st.columns(2) if len(charts) == 2 else [st.container()]
    slot = iter(cols)
    if view.matrix is not None:
        next(slot).plotly_chart(_confusion(view), key=f"{key}_confusion")
    if view.roc is not None:
        next(slot).plotly_chart(_roc(view), key=f"{key}_roc")
    if view.cases:
        st.dataframe(view.cases, hide_index=True, key=f"{key}_cases")


def _confusion(view: EvaluationView) -> go.Figure:
    classes, matrix = view.classes, view.matrix
    figure = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", showscale=False,
                                  text=[[f"{v:g}" for v in row] for row in matrix], texttemplate="%{text}",
                                  hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    figure.update_layout(title="Confusion matrix", height=320, margin=dict(l=10, r=10, t=40, b=10),
                         xaxis=dict(title="predicted class"),
                         yaxis=dict(title="true class", autorange="reversed"))
    return figure


def _roc(view: EvaluationView) -> go.Figure:
    fpr, tpr, auc = view.roc
    name = f"ROC (AUC {auc:.3f})" if auc is not None else "ROC"
    figure = go.Figure([
        go.Scatter(x=fpr, y=tpr, mode="lines", name=name),
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(dash="dash", color="grey")),
    ])
    figure.update_layout(title="ROC curve", height=320, margin=dict(l=10, r=10, t=40, b=10),
                         showlegend=True, legend=dict(orientation="h"),
                         xaxis=dict(title="false positive rate", range=[0, 1]),
                         yaxis=dict(title="true positive rate", range=[0, 1.02]))
    return figure
