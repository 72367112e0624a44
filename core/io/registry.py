"""One registry that picks a reader by content first, extension second, and reports every refusal.

Modelled on MONAI's `LoadImage` (STYLE.md example 5): when nothing can read a path the error lists
why each reader refused it. When a reader recognises the content (magic bytes) and still fails, its
own error is raised: the file is that format and the message says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import UnsupportedFormatError, VolumeReadError
from core.io import dicom, nifti, nrrd, raster
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
    """Load a file or a DICOM series folder as a Volume; raises VolumeReadError subclasses."""
    path = Path(path).expanduser()
    if not path.exists():
        raise VolumeReadError(path, "no such file or folder")
    if path.is_dir():
        return dicom.read_dicom_series(path)
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
