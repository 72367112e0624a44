"""Binary classification metrics in numpy: accuracy, sensitivity, specificity, ROC curve and AUC."""

from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for `scores` (higher = more positive) vs bool `positive`; ties share a point."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.array([], int)
    tps = np.cumsum(y)[distinct] if len(s) else np.array([])
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 0), max(int((~y).sum()), 0)
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.r_[0.0, np.zeros(len(tps))]
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.r_[0.0, np.zeros(len(fps))]
    thresholds = np.r_[np.inf, s[distinct]] if len(s) else np.array([np.inf])
    return fpr, tpr, thresholds


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids); NaN when one class is absent."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(scores, positive)
    return float(np.trapezoid(tpr, fpr))


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return m


def summary(true: np.ndarray, probs: np.ndarray, positive: int) -> dict[str, float]:
    """accuracy, sensitivity (recall of `positive`), specificity (recall of the rest), auc."""
    true = np.asarray(true, int)
    probs = np.asarray(probs, np.float64)
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    is_pos, said_pos = true == positive, pred == positive
    nan = float("nan")
    return {
        "accuracy": float((pred == true).mean()) if len(true) else nan,
        "sensitivity": float((said_pos & is_pos).sum() / is_pos.sum()) if is_pos.any() else nan,
        "specificity": float((~said_pos & ~is_pos).sum() / (~is_pos).sum()) if (~is_pos).any() else nan,
        "auc": roc_auc(probs[:, positive], is_pos) if len(probs) else nan,
    }
