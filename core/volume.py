"""The one in-memory image type: a (z, y, x) float32 volume in modality units."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import VolumeError

MODALITIES = ("CT", "MR", "CR", "DX", "OT")


def _as_triple(name: str, value: object) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{name} must be three numbers, got {value!r}") from exc
    if len(triple) != 3 or not all(np.isfinite(triple)):
        raise VolumeError(f"{name} must be three finite numbers, got {value!r}")
    return triple  # type: ignore[return-value]


def _as_array(array: object) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype.kind not in "biuf":
        raise VolumeError(f"array must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or 0 in arr.shape:
        raise VolumeError(f"array must be (z, y, x) or (y, x) and non-empty, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not any(np.isfinite(plane).any() for plane in arr):  # per slice: no volume-sized temporary
        raise VolumeError("array holds no finite value (all NaN or infinite)")
    return arr


@dataclass(eq=False)
class Volume:
    """A volume `(z, y, x)` in modality units (HU for CT); a 2D image has one slice.

    `spacing` is in mm as (z, y, x). `origin` is the patient-space (LPS, mm) position
    of voxel [0, 0, 0] as (x, y, z); `direction` is 3x3 whose columns are the patient
    directions of the x, y and z index axes.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = "OT"
    volume_id: str = "volume"
    slice_ids: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.array = _as_array(self.array)
        self.spacing = _as_triple("spacing", self.spacing)
        if min(self.spacing) <= 0:
            raise VolumeError(f"spacing must be positive, got {self.spacing}")
        self.origin = _as_triple("origin", self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if self.modality not in MODALITIES:
            raise VolumeError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        self.volume_id = str(self.volume_id)
        if not self.slice_ids:
            self.slice_ids = [f"{self.volume_id}#{z}" for z in range(self.array.shape[0])]
        if len(self.slice_ids) != self.array.shape[0]:
            raise VolumeError(
                f"{len(self.slice_ids)} slice ids for {self.array.shape[0]} slices"
            )
        self.slice_ids = [str(s) for s in self.slice_ids]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape  # type: ignore[return-value]

    @property
    def is_2d(self) -> bool:
        return self.array.shape[0] == 1

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)
