"""NIfTI `.nii` / `.nii.gz` reader.

nibabel, reading the stored dtype (`dataobj`, not the float64 `get_fdata()`) and scaling in float32.
SimpleITK is about 1.3x faster on .nii.gz but silently turns NaN voxels into 0 and reads a truncated
.nii without complaint, so it is not used here. The volume is reoriented to the canonical LPS+ layout
of `core.io._itk`, so axial slices display the right way up (anterior at the top, patient's right on
the image left).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from core.errors import VolumeReadError
from core.io._itk import volume_from_xyz
from core.io.budget import check_decoded, compressed_can_hold, file_size, is_regular, regular_file
from core.volume import Volume

SUFFIXES = (".nii", ".nii.gz")
_MAGICS = (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def _head(path: Path, n: int = 548) -> bytes:
    with open(path, "rb") as fh:
        start = fh.read(2)
        fh.seek(0)
        if start == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=fh) as gz:
                return gz.read(n)
        return fh.read(n)


def is_nifti(path: Path) -> bool:
    """NIfTI-1 magic at byte 344 or NIfTI-2 magic at byte 4 (after gunzip when compressed)."""
    if not is_regular(path):
        return False
    try:
        head = _head(path)
    except (OSError, EOFError, zlib.error):
        return False
    return head[344:348] in _MAGICS or head[4:8] in _MAGICS


def _read_with_nibabel(path: Path) -> Volume:
    import nibabel as nib

    warnings: list[str] = []
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeReadError(path, f"cannot be read as NIfTI: {type(exc).__name__}: {exc}") from exc
    _check_budget(img, path)
    try:
        shape = img.shape
        if len(shape) == 4:
            warnings.append(f"{path}: 4D image with {shape[3]} volumes; loaded the first one only")
            data = np.asanyarray(img.dataobj[..., 0])
        else:
            data = np.asanyarray(img.dataobj)
    except MemoryError as exc:
        raise VolumeReadError(path, "not enough memory to decode it") from exc
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeReadError(path, f"cannot be read as NIfTI: {type(exc).__name__}: {exc}") from exc
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise VolumeReadError(path, f"{data.ndim}D image; only 2D, 3D and 4D (first volume) are supported")
    slope, inter = img.header.get_slope_inter()
    data = data.astype(np.float32)
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        data = data * np.float32(slope or 1.0) + np.float32(inter or 0.0)
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    descrip = img.header["descrip"].tobytes().rstrip(b"\0").decode("latin-1").strip()
    meta = {"format": "NIfTI", "dtype_on_disk": str(img.get_data_dtype()), "shape_on_disk": str(img.shape),
            "descrip": descrip}
    return volume_from_xyz(data, affine_lps, path, meta, warnings)


def _check_budget(img, path: Path) -> None:
    """Before any voxel is read: the declared size fits the budget and the file's real bytes."""
    shape = tuple(int(s) for s in img.header.get_data_shape())
    first = shape[:3] if len(shape) == 4 else shape  # only the first volume of a 4D image is decoded
    check_decoded(path, first, what="NIfTI volume")
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    needed = int(np.prod(shape, dtype=np.int64)) * itemsize
    offset = int(img.header.get("vox_offset", 352) or 352)
    with open(path, "rb") as fh:
        compressed = fh.read(2) == b"\x1f\x8b"
    if not compressed:
        check_decoded(path, shape, bytes_per_value=itemsize, data_bytes_available=file_size(path) - offset,
                      what="NIfTI volume")
    elif needed and not compressed_can_hold(path, 0, offset + needed):
        raise VolumeReadError(
            path, f"the header declares {needed} bytes of voxels ({' x '.join(map(str, shape))}) "
            "but the compressed file holds fewer: truncated or a forged header")


def read_nifti(path: str | Path) -> Volume:
    """Load a NIfTI file as a canonical (z, y, x) float32 Volume; NaN voxels are replaced (warned)."""
    path = Path(path)
    regular_file(path)
    if not is_nifti(path):
        raise VolumeReadError(path, "not a NIfTI file (no NIfTI magic in its header; another format?)")
    return _read_with_nibabel(path)
