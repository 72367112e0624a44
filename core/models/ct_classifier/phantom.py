"""Chest CT phantoms for the classifier's demo: core.phantoms' chest, with larger ground-glass lesions.

core.phantoms paints 2-5 faint opacities of 4.5-10 % of the field of view; after the quick preset's
downsizing (to 16x64x64) they cover a few voxels and a small 3D CNN learns them only slowly. Here
2-3 opacities of 7-11 % of the width (radius), -350 to -150 HU, are painted on a lesion-free chest, so the
two classes differ in a local, learnable way and the lesion masks are known for the Grad-CAM check.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from core.phantoms import ChestPhantom, chest_ct_phantom


def _paint_opacity(rng: np.random.Generator, hu: np.ndarray, lung: np.ndarray, spacing, centre,
                   radius: tuple[float, float]) -> np.ndarray:
    """One fuzzy ellipsoidal opacity at `centre` (z, y, x), limited to the lung; returns its mask."""
    depth, width = hu.shape[0], hu.shape[2]
    r = rng.uniform(*radius) * width
    # The phantom's lungs span the scanned length at any slice count: keep the lesion's share of it
    # what it is at 32 slices, so short test volumes are not mostly lesion.
    rz = max(1.0, r * spacing[1] / spacing[0] * depth / 32)
    zz, yy, xx = np.ogrid[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    d = np.sqrt(((zz - centre[0]) / rz) ** 2 + ((yy - centre[1]) / r) ** 2 + ((xx - centre[2]) / r) ** 2)
    texture = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), 1.5)
    weight = np.clip(1.6 - d + 2.0 * texture, 0, 1) * lung
    target = rng.uniform(-350, -150)
    hu += weight * (target - hu) * (hu < target)
    return (weight > 0.5) & lung


def lesion_chest(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int,
                 lesions: bool, count: tuple[int, int] = (2, 3), radius: tuple[float, float] = (0.07, 0.11),
                 ) -> ChestPhantom:
    """A chest phantom; with `lesions`, `count` (min, max) ground-glass opacities inside the lungs
    (lesion_mask) of `radius` (min, max) times the width."""
    phantom = chest_ct_phantom(shape, spacing, seed=seed, lesions=False)
    if not lesions:
        return phantom
    rng = np.random.default_rng([seed, 23])
    hu, lung = phantom.hu.copy(), phantom.lung_mask.astype(bool)
    mask = np.zeros(hu.shape, dtype=bool)
    inner = ndimage.binary_erosion(lung, iterations=2) if lung.sum() > 1000 else lung
    candidates = np.flatnonzero(inner)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        centre = np.unravel_index(candidates[rng.integers(len(candidates))], hu.shape)
        mask |= _paint_opacity(rng, hu, lung, spacing, centre, radius)
    return dataclasses.replace(phantom, hu=hu.astype(np.float32), lesion_mask=mask.astype(np.uint8),
                               has_lesions=True)
