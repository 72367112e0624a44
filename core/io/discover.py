"""Cheap discovery of loadable things under a data root (no pixel data is read)."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import VolumeReadError
from core.io import dicom

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg")
SKIP_DIRS = {"truth", "__pycache__"}
_SERIES_MODALITIES = {"CT", "MR", "PT", "NM"}


def _is_dicom_name(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return suffix in (".dcm", ".dicom", ".ima") or (suffix == "" and name.upper() != "DICOMDIR")


def _dicom_files(folder: Path, names: list[str]) -> list[Path]:
    """.dcm files, plus extensionless files that carry the DICM marker."""
    out = []
    for name in names:
        if not _is_dicom_name(name):
            continue
        path = folder / name
        if Path(name).suffix or dicom.has_dicom_magic(path):
            out.append(path)
    return out


def _is_series_folder(files: list[Path]) -> bool:
    """Several slices of one cross-sectional series (vs a folder of separate X-rays or multi-frames).

    Reads the headers of the first two files only.
    """
    if len(files) < 2:
        return False
    try:
        first, second = (dicom.read_header(p) for p in files[:2])
    except VolumeReadError:  # discovery must not fail on a bad file; the loader reports it
        return True
    if int(first.get("NumberOfFrames") or 1) > 1:
        return False
    same_series = first.get("SeriesInstanceUID") == second.get("SeriesInstanceUID")
    return same_series or str(first.get("Modality", "")) in _SERIES_MODALITIES


def _volumes_in(folder: Path, names: list[str]) -> list[Path]:
    found = [folder / n for n in names if n.lower().endswith(VOLUME_SUFFIXES) and not n.startswith(".")]
    dicom_files = _dicom_files(folder, [n for n in names if not n.startswith(".")])
    if _is_series_folder(dicom_files):
        found.append(folder)
    else:
        found.extend(dicom_files)
    return found


def find_volumes(root: Path) -> list[Path]:
    """DICOM series folders (once each), single DICOM files, NIfTI, NRRD and PNG/JPEG under `root`.

    Skips hidden folders and `truth/` folders; .npy/.npz/.csv/.json are never listed. Sorted.
    """
    root = Path(root)
    if not root.is_dir():
        return [root] if root.is_file() and root.name.lower().endswith(VOLUME_SUFFIXES + (".dcm",)) else []
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        found.extend(_volumes_in(Path(current), sorted(files)))
    return sorted(found)
