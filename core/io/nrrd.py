"""NRRD `.nrrd` / `.nhdr` reader (SimpleITK), reoriented to the canonical LPS+ layout."""

from __future__ import annotations

from pathlib import Path

from core.errors import VolumeReadError
from core.io._itk import read_with_sitk
from core.volume import Volume

SUFFIXES = (".nrrd", ".nhdr")


def is_nrrd(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"NRRD"
    except OSError:
        return False


def read_nrrd(path: str | Path) -> Volume:
    """Load a NRRD file (attached or detached header) as a canonical (z, y, x) float32 Volume."""
    path = Path(path)
    if not is_nrrd(path):
        raise VolumeReadError(path, "not a NRRD file (it does not start with the 'NRRD' magic)")
    return read_with_sitk(path, "NRRD")
