"""Predict & review for any family: predict a volume, then its label, probabilities, heatmap and mask.

The review kinds (core.models.REVIEW_KINDS) start from this view; a kind's own module
(pages/_ui/review_<kind>.py) may show more.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import predictions
from core.errors import SlicewiseError
from core.windowing import default_window
from pages._ui.review_common import pick_volume, stored_controls


def review(spec, checkpoint: Path, data_root: Path, runs_root: Path) -> None:
    volume = pick_volume(spec, data_root)
    if volume is None:
        return
    saved = stored_controls(checkpoint, volume, runs_root)
    if saved is None:
        return
    try:
        prediction = predictions.load_prediction(saved)
    except SlicewiseError as exc:
        st.error(str(exc))
        return
    show_prediction(volume, prediction)


def show_prediction(volume, prediction) -> None:
    """Label and probabilities as metrics, then one slice with the heatmap and mask drawn over it."""
    from core.render import OverlayLayer, render_slice

    if prediction.label is not None:
        cols = st.columns(1 + len(prediction.probabilities or {}))
        cols[0].metric("Predicted", prediction.label)
        for col, (name, p) in zip(cols[1:], (prediction.probabilities or {}).items(), strict=False):
            col.metric(f"p({name})", f"{p:.1%}")
    layers = []
    if prediction.heatmap is not None:
        layers.append(OverlayLayer("heatmap", prediction.heatmap, opacity=0.5, threshold=0.05,
                                   label="heatmap"))
    if prediction.mask is not None:
        layers.append(OverlayLayer("mask", prediction.mask, colour=(255, 80, 80), opacity=0.45, style="both",
                                   label="mask"))
    n = volume.shape[0]
    z = st.slider("Slice", 1, n, n // 2 + 1, key="predict_generic_slice") - 1 if n > 1 else 0
    image = render_slice(volume.array, "axial", z, default_window(volume.array, volume.modality), layers)
    st.image(image, caption=f"slice {z + 1} / {n}", width=512)
