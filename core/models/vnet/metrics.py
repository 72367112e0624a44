"""Per-case segmentation metrics: Dice, IoU, precision, recall (voxel counts) and the Hausdorff distance
and its 95th percentile in mm with the voxel spacing (MONAI's `compute_hausdorff_distance`, symmetric,
on the surfaces of both masks)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

OVERLAP = ("dice", "iou", "precision", "recall")
DISTANCES = ("hausdorff_mm", "hd95_mm")


def overlap_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of two binary masks."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def overlap_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice, IoU, precision, recall; 1.0 where both masks are empty (nothing to find, nothing found)."""

    def ratio(num: float, den: float) -> float:
        return 1.0 if den == 0 else num / den

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def hausdorff_mm(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], percentile: float | None = None
) -> float | None:
    """Symmetric Hausdorff distance (or its `percentile`) in mm; None when either mask is empty."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if not p.any() or not t.any():
        return None
    y_pred = torch.from_numpy(p)[None, None].float()
    y = torch.from_numpy(t)[None, None].float()
    value = compute_hausdorff_distance(
        y_pred, y, include_background=True, percentile=percentile, spacing=[float(s) for s in spacing]
    )
    value = float(value.reshape(-1)[0])
    return value if math.isfinite(value) else None


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict[str, float | None]:
    scores: dict[str, float | None] = dict(overlap_from_counts(*overlap_counts(pred, truth)))
    scores["hausdorff_mm"] = hausdorff_mm(pred, truth, spacing)
    scores["hd95_mm"] = hausdorff_mm(pred, truth, spacing, percentile=95)
    return scores


def summarise(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """`<key>_mean` and `<key>_sd` (population) over the rows that have a number for the key."""
    out: dict[str, float] = {}
    for key in keys:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float) and r[key] is not None]
        if values:
            out[f"{key}_mean"] = float(np.mean(values))
            out[f"{key}_sd"] = float(np.std(values))
    return out
