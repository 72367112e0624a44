"""Cheap discovery of loadable things under a data root (no pixel data is read)."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import VolumeReadError
from core.io import dicom
from core.io.budget import file_kind

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


def _regular_names(folder: Path, names: list[str], problems: list[str] | None) -> list[str]:
    """Only regular files (links followed): FIFOs, devices, sockets and link loops are skipped,
    never opened (opening a FIFO blocks; reading /dev/zero never ends)."""
    out = []
    for name in names:
        kind = file_kind(folder / name)
        if kind == "file":
            out.append(name)
        elif problems is not None and not name.startswith(".") and kind != "dir":
            problems.append(f"{folder / name}: skipped, it is {kind}, not a regular file")
    return out


def _volumes_in(folder: Path, names: list[str]) -> list[Path]:
    found = [folder / n for n in names if n.lower().endswith(VOLUME_SUFFIXES) and not n.startswith(".")]
    dicom_files = _dicom_files(folder, [n for n in names if not n.startswith(".")])
    if _is_series_folder(dicom_files):
        found.append(folder)
    else:
        found.extend(dicom_files)
    return found


def find_volumes(root: Path, problems: list[str] | None = None) -> list[Path]:
    """DICOM series folders (once each), single DICOM files, NIfTI, NRRD and PNG/JPEG under `root`.

    Skips hidden folders and `truth/` folders; .npy/.npz/.csv/.json are never listed. Sorted.
    Only regular files are listed (a FIFO, device, socket or link loop is skipped, never opened).
    An unreadable `root` raises VolumeReadError naming it; an unreadable subfolder or a skipped
    entry is appended to `problems` (when given) and the listing goes on.
    """
    root = Path(root)
    kind = file_kind(root)
    if kind != "dir":
        if kind == "file":
            return [root] if root.name.lower().endswith(VOLUME_SUFFIXES + (".dcm",)) else []
        if kind.startswith(("unreadable", "a symbolic link loop")):
            raise VolumeReadError(root, f"cannot be listed: it is {kind}")
        return []
    try:
        os.listdir(root)
    except OSError as exc:
        raise VolumeReadError(root, f"folder cannot be listed ({exc.strerror or exc})") from exc

    def unreadable(exc: OSError) -> None:
        if problems is not None:
            problems.append(f"{exc.filename}: folder skipped, it cannot be listed ({exc.strerror or exc})")

    found: list[Path] = []
    for current, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        names = _regular_names(Path(current), sorted(files), problems)
        found.extend(_volumes_in(Path(current), names))
    return sorted(found)
