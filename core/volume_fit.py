"""Which volumes suit a model family, told cheaply before loading one (Predict & review's volume list).

The modality comes from what costs little: a DICOM header (one file, no pixels), a sequence
name in a NIfTI/NRRD file name (`_flair`, `_t1ce`: MR, as core.io guesses on load), the first
slice of a NIfTI (air at or below -900 HU: CT), "OT" for PNG/JPEG images. Unknown stays "".
A family's `modalities` (ModelSpec) say what suits it; volumes that suit come first, unknown
ones next, the others last, and running a family on another modality needs a confirmation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MR_NAME = re.compile(r"(^|[_\-.])(t1|t1ce|t1gd|t2|flair|pd|dwi|adc|mr|mri)([_\-.]|$)", re.IGNORECASE)
_CT_AIR_HU = -900.0


@dataclass(frozen=True)
class VolumeFit:
    """A listed volume with its cheap modality ("" unknown) and whether it suits the family
    (True, False, or None when the modality is unknown)."""

    entry: Any  # core.catalog.VolumeEntry
    modality: str
    fits: bool | None

    @property
    def label(self) -> str:
        """`name  ·  kind  ·  modality`, with "not for this model" on a volume that does not suit."""
        parts = [display_name(self.entry), self.entry.kind] + ([self.modality] if self.modality else [])
        return "  ·  ".join(parts) + ("  ·  not for this model" if self.fits is False else "")


def display_name(entry: Any) -> str:
    """A listed volume's name for a reader: the path under the data root, or the folder's own name
    when the data root itself is the series (the catalog names that one ".")."""
    return f"{Path(entry.path).name} (the data root)" if entry.name in (".", "") else entry.name


def entry_modality(path: Path | str, kind: str) -> str:
    """The modality of a listed volume without loading it; "" when it cannot be told cheaply."""
    path = Path(path)
    try:
        if kind == "image":
            return "OT"
        if kind in ("DICOM series", "DICOM file"):
            return _dicom_modality(path)
        if _MR_NAME.search(path.name.split(".")[0]):
            return "MR"
        if kind == "NIfTI":
            return _nifti_modality(path)
    except (OSError, ValueError, EOFError, AttributeError, IndexError, KeyError):
        return ""
    return ""


def _dicom_modality(path: Path) -> str:
    import pydicom

    from core.volume import MODALITIES

    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for file in files[:5]:  # the first readable header
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # noqa: BLE001 - pydicom raises many kinds on a non-DICOM file
            continue
        code = str(ds.get("Modality", "") or "")
        if code:
            return code if code in MODALITIES else "OT"
    return ""


def _nifti_modality(path: Path) -> str:
    """CT when the first slice holds air in HU (a gzipped file is decompressed only that far)."""
    import nibabel as nib
    import numpy as np

    image = nib.load(str(path))
    data = image.dataobj
    first = np.asarray(data[..., 0] if len(image.shape) >= 3 else data[...], dtype=np.float32)
    return "CT" if first.size and float(np.nanmin(first)) <= _CT_AIR_HU else ""


def fits(spec: Any, modality: str) -> bool | None:
    """Whether a volume of `modality` suits the family; None when the modality is unknown."""
    if not getattr(spec, "modalities", ()):
        return True
    if not modality:
        return None
    return modality in spec.modalities


def order_for(spec: Any, entries: list, modalities: dict[Path, str] | None = None) -> list[VolumeFit]:
    """The entries for the family's volume list: those that suit first, unknown next, the rest
    last, each group in the catalog's order. `modalities` (path -> modality) skips the look-up."""
    found = []
    for entry in entries:
        modality = (modalities or {}).get(entry.path)
        if modality is None:
            modality = entry_modality(entry.path, entry.kind)
        found.append(VolumeFit(entry, modality, fits(spec, modality)))
    rank = {True: 0, None: 1, False: 2}
    return sorted(found, key=lambda f: rank[f.fits])


def mismatch(spec: Any, name: str, modality: str) -> str:
    """Why running the family on this volume is doubtful, or "" when the volume suits it."""
    if fits(spec, modality) is not False:
        return ""
    made_for = ", ".join(spec.modalities)
    return (f"{name} is {modality}, but {spec.title or spec.name} is made for {made_for}: its predictions "
            f"on a {modality} volume mean nothing and would be saved as a Viewer overlay all the same.")
