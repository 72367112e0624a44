"""Volumes through SimpleITK (NIfTI, NRRD), reoriented to one canonical voxel layout.

Canonical layout (the one DICOM axial series have): array (z, y, x) where x runs to the patient's
left, y to posterior and z to superior (LPS+). An axial slice then displays radiologically: anterior
at the top, the patient's right on the image's left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import VolumeReadError
from core.io._common import file_volume_id, guess_modality, to_grey
from core.volume import Volume

_LPS = np.array([[0, 1], [1, 1], [2, 1]])


def to_canonical(arr_xyz: np.ndarray, affine_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Flip/transpose (x, y, z) voxels so the index axes run L, P, S; returns the new affine too.

    `affine_lps` maps voxel indices to LPS mm. Oblique volumes go to the closest canonical layout
    (no resampling). Also returns the on-disk orientation code (e.g. 'RAS').
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    ornt = io_orientation(affine_lps)
    code = "".join(("LPS"[int(ax)] if flip > 0 else "RAI"[int(ax)]) for ax, flip in ornt)
    transform = ornt_transform(ornt, _LPS)
    out = apply_orientation(arr_xyz, transform)
    affine = affine_lps @ inv_ornt_aff(transform, arr_xyz.shape[:3])
    return out, affine, code


def affine_from(spacing_xyz, origin, direction) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing_xyz, dtype=float)
    affine[:3, 3] = origin
    return affine


def replace_nan(arr: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    """All NaN/inf -> error naming the file; some -> replaced by the lowest finite value, with a warning."""
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    if not finite.any():
        raise VolumeReadError(path, "every voxel is NaN or infinite; there is no image to show")
    bad = int((~finite).sum())
    fill = float(arr[finite].min())
    arr = np.where(finite, arr, np.float32(fill)).astype(np.float32)
    warnings.append(f"{path}: {bad} NaN/infinite voxel(s) ({bad / arr.size:.2%}) replaced by {fill:g}")
    return arr


def volume_from_xyz(arr_xyz: np.ndarray, affine_lps: np.ndarray, path: Path, meta: dict,
                    warnings: list[str]) -> Volume:
    """(x, y, z) voxels + LPS affine -> canonical Volume (z, y, x) float32."""
    arr, affine, code = to_canonical(arr_xyz, affine_lps)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    zooms = np.where(zooms > 0, zooms, 1.0)
    array = np.ascontiguousarray(arr.transpose(2, 1, 0), dtype=np.float32)
    array = replace_nan(array, path, warnings)
    meta = {**meta, "orientation_on_disk": code, "orientation": "LPS"}
    return Volume(
        array=array, spacing=(zooms[2], zooms[1], zooms[0]), origin=tuple(affine[:3, 3]),
        direction=affine[:3, :3] / zooms, modality=guess_modality(path, array),
        volume_id=file_volume_id(path),
        meta=meta, source=str(path.resolve()), warnings=warnings,
    )


def _first_volume(img, path: Path, warnings: list[str]):
    """4D -> the first 3D volume, with a warning; 2D -> one slice."""
    import SimpleITK as sitk

    dim = img.GetDimension()
    if dim == 4:
        size = img.GetSize()
        warnings.append(f"{path}: 4D image with {size[3]} volumes; loaded the first one only")
        return sitk.Extract(img, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if dim == 2:
        return sitk.JoinSeries(img)
    if dim != 3:
        raise VolumeReadError(path, f"{dim}D image; only 2D, 3D and 4D (first volume) are supported")
    return img


def _sitk_error(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Description" in ln or "Unable" in ln or "error" in ln.lower()]
    return (useful or lines or [type(exc).__name__])[-1][:300]


def read_with_sitk(path: Path, fmt: str) -> Volume:
    """Read a NIfTI/NRRD/... file with SimpleITK into a canonical Volume."""
    import SimpleITK as sitk

    warnings: list[str] = []
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(path, f"cannot be read as {fmt}: {_sitk_error(exc)}") from exc
    img = _first_volume(img, path, warnings)
    arr = sitk.GetArrayFromImage(img)  # (z, y, x[, c]), a copy: a view would outlive img
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = to_grey(arr)
        warnings.append(f"{path}: {img.GetNumberOfComponentsPerPixel()}-component pixels converted to grey")
    affine = affine_from(img.GetSpacing(), img.GetOrigin(), np.array(img.GetDirection()).reshape(3, 3))
    meta = {"format": fmt, "dtype_on_disk": img.GetPixelIDTypeAsString(), "shape_on_disk": str(img.GetSize())}
    for key in img.GetMetaDataKeys():
        if key in ("descrip", "intent_name", "aux_file", "NRRD_space", "modality", "content"):
            meta[key] = img.GetMetaData(key).strip()
    return volume_from_xyz(np.asarray(arr).transpose(2, 1, 0), affine, path, meta, warnings)
