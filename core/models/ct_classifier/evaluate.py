"""evaluation.json for the CT classifier: summary, confusion matrix, ROC and one row per volume."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.models.ct_classifier.data import CTCase


def roc_curve(truth: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """ROC points (every distinct threshold) and the area under it (trapezoids; ties handled)."""
    positives, negatives = int(truth.sum()), int(len(truth) - truth.sum())
    if positives == 0 or negatives == 0:
        return {"fpr": [], "tpr": [], "auc": None}
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(t)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    return {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist(), "auc": float(np.trapezoid(tpr, fpr))}


def evaluation_report(cases: list[CTCase], p_positive: np.ndarray, classes: list[str], checkpoint: str,
                      problems: list[str]) -> dict[str, Any]:
    truth = np.array([c.label for c in cases], dtype=int)
    predicted = (np.asarray(p_positive) >= 0.5).astype(int)
    matrix = [[int(((truth == a) & (predicted == b)).sum()) for b in (0, 1)] for a in (0, 1)]
    (tn, fp), (fn, tp) = matrix
    roc = roc_curve(truth, np.asarray(p_positive, dtype=float))
    summary = {
        "accuracy": float((truth == predicted).mean()),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "auc": roc["auc"],
        "volumes": len(cases),
    }
    rows = [
        {"case": c.case_id, "path": str(c.path), "truth": classes[c.label], "predicted": classes[int(q)],
         f"p({classes[1]})": round(float(p), 6), "correct": bool(c.label == q)}
        for c, p, q in zip(cases, p_positive, predicted, strict=True)
    ]
    return {"split": "validation", "checkpoint": checkpoint, "summary": summary,
            "confusion_matrix": {"classes": list(classes), "matrix": matrix, "rows": "truth",
                                 "columns": "predicted"},
            "roc": roc, "cases": rows, "left_out": list(problems)}
