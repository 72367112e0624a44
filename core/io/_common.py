"""Small helpers the readers share: volume ids, grey conversion, slice-geometry checks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from core.settings import data_root

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, what PIL's "L" uses


def file_volume_id(path: Path) -> str:
    """The path relative to the data root when under it, else the file name (contracts.md)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(data_root().resolve()).as_posix()
    except ValueError:
        return path.name


def to_grey(arr: np.ndarray) -> np.ndarray:
    """(..., 3 or 4) colour samples -> float32 luminance; alpha is dropped."""
    return np.tensordot(arr[..., :3].astype(np.float32), LUMA, axes=([-1], [0]))


def spacing_report(positions: np.ndarray, where: str) -> tuple[float, list[str]]:
    """Slice spacing (median step) of sorted positions along the normal, and warnings for gaps.

    A step above 1.5x the median is a missing slice; steps that differ from the median by more
    than 1% (and 0.01 mm) are uneven spacing. Duplicates must be removed before.
    """
    steps = np.diff(positions)
    if steps.size == 0:
        return 0.0, []
    median = float(np.median(steps))
    warnings = []
    gaps = np.flatnonzero(steps > 1.5 * median)
    for i in gaps:
        missing = int(round(steps[i] / median)) - 1
        warnings.append(
            f"{where}: missing slice(s) between z={i} and z={i + 1}: a gap of {steps[i]:.3g} mm where the "
            f"spacing is {median:.3g} mm (about {missing} slice(s) missing)"
        )
    regular = np.delete(steps, gaps)
    if regular.size and np.max(np.abs(regular - median)) > max(0.01 * median, 0.01):
        warnings.append(
            f"{where}: uneven slice spacing: steps from {regular.min():.4g} to {regular.max():.4g} mm "
            f"(median {median:.4g} mm)"
        )
    return median, warnings


_MR_NAME = re.compile(r"(^|[_\-.])(t1|t1ce|t1gd|t2|flair|pd|dwi|adc|mr|mri)([_\-.]|$)", re.IGNORECASE)


def guess_modality(path: Path, array: np.ndarray) -> str:
    """Modality of a file format without one (NIfTI, NRRD): MR by sequence name, CT by HU air.

    A name like `<id>_t1ce.nii.gz` or `brain_flair.nrrd` is MR; an image whose minimum is
    at or below -900 (air in Hounsfield units, or the scanner's padding) is CT; else "OT".
    """
    if _MR_NAME.search(Path(path).name.split(".")[0]):
        return "MR"
    return "CT" if float(np.nanmin(array)) <= -900.0 else "OT"
