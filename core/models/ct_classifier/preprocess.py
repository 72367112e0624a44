"""SPEC 5C preprocessing, shared by training and prediction, and its inverse for heatmaps.

HU clipped to [-1000, 400] and scaled to [0, 1]; a quarter turn in plane (np.rot90 over (y, x):
counter-clockwise as displayed); a linear resize to (depth, size, size). The resize maps the first and
last voxel centres onto each other (align_corners=True), like `scipy.ndimage.zoom(order=1)` in the
reference, and runs through `torch.nn.functional.interpolate` (about 100x faster than ndimage.zoom).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.errors import SlicewiseError

# Smallest volume the classifier accepts: a 3D model needs slices to look across.
MIN_SHAPE = (4, 16, 16)
PREPROCESS_VERSION = 1  # part of the cache key: bump when the preprocessing changes


class VolumeTooSmallError(SlicewiseError, ValueError):
    """The volume has fewer slices or pixels than the 3D classifier can resize from."""


@dataclass(frozen=True)
class Preprocessing:
    depth: int = 64
    size: int = 128
    hu_min: float = -1000.0
    hu_max: float = 400.0
    rotate90: bool = True

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Preprocessing:
        return cls(int(settings["depth"]), int(settings["size"]), float(settings["hu_min"]),
                   float(settings["hu_max"]), bool(settings["rotate90"]))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "version": PREPROCESS_VERSION}

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.depth, self.size, self.size)


def check_resizable(shape: tuple[int, ...], where: str) -> None:
    """VolumeTooSmallError naming `where` when `shape` (z, y, x) is below MIN_SHAPE."""
    if len(shape) != 3 or any(n < m for n, m in zip(shape, MIN_SHAPE, strict=True)):
        got = "x".join(str(n) for n in shape)
        raise VolumeTooSmallError(
            f"{where}: {got} voxels is too small for the 3D CT classifier (needs at least "
            f"{MIN_SHAPE[0]} slices of {MIN_SHAPE[1]}x{MIN_SHAPE[2]} pixels)")


def preprocess_array(hounsfield: np.ndarray, prep: Preprocessing, where: str = "volume") -> np.ndarray:
    """(z, y, x) HU -> float32 (depth, size, size) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    check_resizable(tuple(hounsfield.shape), where)
    t = torch.from_numpy(np.ascontiguousarray(hounsfield, dtype=np.float32))
    t = (t.clamp(prep.hu_min, prep.hu_max) - prep.hu_min) / (prep.hu_max - prep.hu_min)
    if prep.rotate90:
        t = torch.rot90(t, 1, dims=(1, 2))
    t = F.interpolate(t[None, None], size=prep.shape, mode="trilinear", align_corners=True)[0, 0]
    return t.clamp_(0.0, 1.0).numpy()


def _axis_weights(n_out: int, n_prep: int, n_cells: int, offset: float, step: float) -> np.ndarray:
    """(n_out, n_cells) linear-interpolation weights from the CAM cells onto one axis of the original
    (rotated-frame) volume: original voxel t sits at preprocessed coordinate t (P-1)/(N-1), the CAM
    cell j at `offset + step * j`; beyond the first/last cell centre the edge value holds."""
    t = np.arange(n_out, dtype=np.float64)
    p = t * (n_prep - 1) / (n_out - 1) if n_out > 1 else np.full(1, (n_prep - 1) / 2)
    s = np.clip((p - offset) / step, 0, n_cells - 1)
    lo = np.floor(s).astype(int)
    hi = np.minimum(lo + 1, n_cells - 1)
    frac = s - lo
    weights = np.zeros((n_out, n_cells))
    weights[np.arange(n_out), lo] += 1 - frac
    weights[np.arange(n_out), hi] += frac
    return weights


def cam_to_volume(cam: np.ndarray, original_shape: tuple[int, int, int], prep: Preprocessing,
                  offset: float, step: float) -> np.ndarray:
    """A last-conv-block map (cells) -> float32 with `original_shape` (z, y, x), undoing the resize and
    the quarter turn. `offset`/`step` place the cells on the preprocessed grid (net.cam_cell_centres)."""
    z, y, x = original_shape
    rotated = (z, x, y) if prep.rotate90 else (z, y, x)
    out = cam.astype(np.float32)
    for axis, (n_out, n_prep) in enumerate(zip(rotated, prep.shape, strict=True)):
        weights = _axis_weights(n_out, n_prep, cam.shape[axis], offset, step).astype(np.float32)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    if prep.rotate90:
        out = np.rot90(out, -1, axes=(1, 2))
    return np.ascontiguousarray(out, dtype=np.float32)


def cam_to_input(cam: np.ndarray, prep: Preprocessing, offset: float, step: float) -> np.ndarray:
    """The same map on the preprocessed grid (depth, size, size), for the montage."""
    out = cam.astype(np.float32)
    for axis, n_prep in enumerate(prep.shape):
        weights = _axis_weights(n_prep, n_prep, cam.shape[axis], offset, step).astype(np.float32)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    return out.astype(np.float32)
