"""Lung boxes as (xmin, ymin, xmax, ymax) fractions of the slice width/height: one type, one IoU."""

from __future__ import annotations

import math
from collections.abc import Sequence

Box = tuple[float, float, float, float]


def box_iou(a: Box | None, b: Box | None) -> float:
    """Intersection over union of two (xmin, ymin, xmax, ymax) boxes; 1.0 when both are None."""
    if a is None and b is None:
        return 1.0
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def ordered_box(values: Sequence[float] | None) -> Box | None:
    """Corners sorted (a regressor may swap them), clipped to [0, 1]; None if not finite or empty."""
    if values is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    x0, x1 = sorted((min(max(x0, 0.0), 1.0), min(max(x1, 0.0), 1.0)))
    y0, y1 = sorted((min(max(y0, 0.0), 1.0), min(max(y1, 0.0), 1.0)))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
