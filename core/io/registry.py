"""One registry that picks a reader by content first, extension second, and reports every refusal.

Modelled on MONAI's `LoadImage` (STYLE.md example 5): when nothing can read a path the error lists
why each reader refused it. When a reader recognises the content (magic bytes) and still fails, its
own error is raised: the file is that format and the message says what is wrong with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import SlicewiseError, UnsupportedFormatError, VolumeReadError
from core.io import dicom, nifti, nrrd, raster
from core.io.budget import VolumeTooLargeError, file_kind, regular_file, resolve
from core.volume import Volume


@dataclass(frozen=True)
class Reader:
    name: str
    suffixes: tuple[str, ...]
    sniff: Callable[[Path], bool]
    read: Callable[[Path], Volume]


def _dicom_suffix(path: Path) -> bool:
    return path.suffix.lower() in (".dcm", ".dicom", ".ima") or path.suffix == ""


READERS: list[Reader] = [
    Reader("DICOM", (".dcm", ".dicom", ".ima", ""), dicom.has_dicom_magic, dicom.read_dicom_file),
    Reader("NIfTI", nifti.SUFFIXES, nifti.is_nifti, nifti.read_nifti),
    Reader("NRRD", nrrd.SUFFIXES, nrrd.is_nrrd, nrrd.read_nrrd),
    Reader("PNG/JPEG", raster.SUFFIXES, raster.is_raster, raster.read_raster),
]


def _has_suffix(path: Path, reader: Reader) -> bool:
    name = path.name.lower()
    if reader.name == "DICOM":
        return _dicom_suffix(path)
    return any(name.endswith(s) for s in reader.suffixes)


def _refusal(path: Path, reader: Reader) -> str:
    shown = ", ".join(s or "no extension" for s in reader.suffixes)
    return f"content not recognised and the name does not end in {shown}"


def load_volume(path: str | Path) -> Volume:
    """Load a file or a DICOM series folder as a Volume; raises VolumeReadError subclasses.

    Only regular files (and folders) are opened, links resolved; every failure, including an OSError
    or a value the Volume refuses, is a VolumeReadError naming the path."""
    path = Path(path).expanduser()
    try:
        return _load(path)
    except VolumeReadError:
        raise
    except SlicewiseError as exc:
        raise VolumeReadError(path, str(exc)) from exc
    except MemoryError as exc:
        raise VolumeTooLargeError(path, "not enough memory to decode it") from exc
    except OSError as exc:
        raise VolumeReadError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # a third-party decoder's own type: still name the file
        raise VolumeReadError(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc


def _load(path: Path) -> Volume:
    if not os.path.lexists(path):
        raise VolumeReadError(path, "no such file or folder")
    resolve(path)  # a symlink loop or a dangling link is named here
    if file_kind(path) == "dir":
        return dicom.read_dicom_series(path)
    regular_file(path)
    by_content = [r for r in READERS if r.sniff(path)]
    if by_content:
        return by_content[0].read(path)  # the format is certain: its error (if any) is the real problem
    reasons: dict[str, str] = {}
    for reader in READERS:
        if not _has_suffix(path, reader):
            reasons[reader.name] = _refusal(path, reader)
            continue
        try:
            return reader.read(path)
        except VolumeReadError as exc:
            reasons[reader.name] = exc.problem
    if path.stat().st_size == 0:
        reasons = {"all readers": "the file is empty (0 bytes)"}
    raise UnsupportedFormatError(path, reasons)
