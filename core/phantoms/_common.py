"""Helpers shared by the phantoms: tissue tables, grids, smooth noise, ellipses, boxes from masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

TISSUE: dict[str, int] = {
    "air": 0,
    "fat": 1,
    "soft_tissue": 2,
    "lung": 3,
    "heart": 4,
    "cortical_bone": 5,
    "marrow": 6,
    "table": 7,
    "airway": 8,
    "liver": 9,
}

# Mean Hounsfield units per tissue label before texture, partial volume and noise.
_TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -100.0,
    "soft_tissue": 40.0,
    "lung": -860.0,
    "heart": 40.0,
    "cortical_bone": 900.0,
    "marrow": 250.0,
    "table": 300.0,
    "airway": -990.0,
    "liver": 60.0,
}


def _unit_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Column coordinate u (1, W) and row coordinate v (H, 1), both in [-1, 1]."""
    u = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / (width / 2)
    v = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / (height / 2)
    return u[np.newaxis, :], v[:, np.newaxis]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _coarse_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """Low-frequency noise: a random grid of `cells` per axis, smoothly interpolated to `shape`.

    Separable Gaussian-kernel interpolation as one small matrix per axis: ~100x faster than
    `ndimage.zoom(order=3)` or a wide `gaussian_filter` on a full volume.
    """
    noise = rng.standard_normal((cells,) * len(shape)).astype(np.float32)
    for axis, size in enumerate(shape):
        x = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
        weights = np.exp(-0.5 * (x[:, None] - (np.arange(cells) + 0.5)[None]) ** 2)
        weights /= weights.sum(axis=1, keepdims=True)
        noise = np.moveaxis(np.tensordot(weights.astype(np.float32), noise, axes=(1, axis)), 0, axis)
    noise -= noise.mean()
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _ellipse(u, v, cu: float, cv: float, ru, rv) -> np.ndarray:
    """Squared normalised radius ((u-cu)/ru)^2 + ((v-cv)/rv)^2 (broadcasts)."""
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2


def boxes_from_mask(mask: np.ndarray) -> np.ndarray:
    """Per-slice tight box of a (z, y, x) mask as (z, 4) float32 Xmin, Ymin, Xmax, Ymax.

    Fractions of the slice width/height at pixel edges: a mask covering columns 10..19 of a
    100-wide slice gives Xmin 0.10, Xmax 0.20. Rows of slices without any mask voxel are NaN.
    """
    mask = np.asarray(mask, dtype=bool)
    depth, height, width = mask.shape
    cols = mask.any(axis=1)  # (z, x)
    rows = mask.any(axis=2)  # (z, y)
    present = cols.any(axis=1)
    boxes = np.full((depth, 4), np.nan, dtype=np.float32)
    xmin = cols.argmax(axis=1)
    xmax = width - cols[:, ::-1].argmax(axis=1)
    ymin = rows.argmax(axis=1)
    ymax = height - rows[:, ::-1].argmax(axis=1)
    stacked = np.stack([xmin / width, ymin / height, xmax / width, ymax / height], axis=1)
    boxes[present] = stacked[present].astype(np.float32)
    return boxes
