"""Intensity windowing: modality units -> display values in [0, 1]."""

from __future__ import annotations

import numpy as np

# name -> (center, width). "ct_classifier" is the HU clip [-1000, 400] -> [0, 1] of the
# 3D CT classifier; "lung" is the value the lung-box pipeline uses.
PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "ct_classifier": (-300.0, 1400.0),
}
# Presets that are a model's input window, not a reading window: never offered in a window list.
MODEL_PRESETS: frozenset[str] = frozenset({"ct_classifier"})

_MIN_WIDTH = 1e-6


def apply_window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map `[center - width/2, center + width/2]` linearly to [0, 1], clipping outside.

    A width <= 0 degenerates to a threshold at `center` (values >= center -> 1).
    """
    arr = np.asarray(array, dtype=np.float32)
    if not np.isfinite(center) or not np.isfinite(width):
        raise ValueError(f"window center/width must be finite, got {center}, {width}")
    if width <= _MIN_WIDTH:
        return (arr >= center).astype(np.float32)
    low = np.float32(center - width / 2.0)
    out = (arr - low) * np.float32(1.0 / width)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def auto_window(array: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> tuple[float, float]:
    """Percentile window (center, width) for MR and other uncalibrated images.

    Ignores non-finite values and, where the image has a background of its minimum
    value (skull-stripped MR), that background. A constant image gets width 1.
    """
    arr = np.asarray(array, dtype=np.float32)
    values = arr[np.isfinite(arr)]
    if values.size == 0:
        return 0.0, 1.0
    step = max(1, values.size // 1_000_000)
    values = values[::step]
    foreground = values[values > values.min()]
    if foreground.size >= 0.01 * values.size:
        values = foreground
    low, high = np.percentile(values, [low_pct, high_pct])
    width = float(high - low)
    if width <= 0:
        return float(low), 1.0
    return float((low + high) / 2.0), width


def default_window(array: np.ndarray, modality: str) -> tuple[float, float]:
    """The window a volume opens with: lung for CT, percentile auto-window otherwise."""
    if modality == "CT":
        return PRESETS["lung"]
    return auto_window(array)


def to_uint8(windowed: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 grey, rounding to nearest."""
    return (np.asarray(windowed, dtype=np.float32) * 255.0 + 0.5).astype(np.uint8)
