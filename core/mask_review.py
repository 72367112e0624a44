"""Reviewing predicted segmentation masks (any family whose Prediction has a `mask`): where a volume's
reference label is, overlap and distance metrics, per-slice Dice, the run's cases worst first, export.

No Streamlit here: pages/_ui/review_mask.py only wires these to widgets. Metrics: Dice, IoU, precision,
recall from voxel counts; Hausdorff distance and HD95 in mm with the voxel spacing (MONAI's
`compute_hausdorff_distance`, symmetric, over the masks' surfaces).
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

VOLUME_SUFFIXES = (".nii.gz", ".nrrd", ".nhdr", ".nii")
LABEL_PREFIXES = ("label", "seg", "mask", "laendo")
FLAT_PAIR = re.compile(r"^(?P<case>.+)_(?P<role>image|img|label|seg|mask)$", re.IGNORECASE)
OVERLAP = ("dice", "iou", "precision", "recall")
DISTANCES = ("hausdorff_mm", "hd95_mm")
EXPORT_FORMATS = {"NRRD (.nrrd)": ".nrrd", "NIfTI (.nii.gz)": ".nii.gz"}
DICOM_SEG_SUFFIX = "_seg.dcm"


# ---------------------------------------------------------------------------------------------
# Where the reference label of an image is
# ---------------------------------------------------------------------------------------------


def volume_stem(name: str) -> str | None:
    """`image.nii.gz` -> `image`; None when the name is not a volume file."""
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def is_label_name(stem: str) -> bool:
    return stem.lower().startswith(LABEL_PREFIXES)


def label_beside(image: Path) -> Path | None:
    """The label volume of an image: `<case>_label.*` beside `<case>_image.*`, else the one label*/seg*/
    mask*/laendo* file in the image's own folder (a case folder); None when there is none."""
    image = Path(image)
    stem = volume_stem(image.name)
    if stem is None or is_label_name(stem) or not image.parent.is_dir():
        return None
    names = sorted(p.name for p in image.parent.iterdir() if p.is_file())
    match = FLAT_PAIR.match(stem)
    if match and match["role"].lower() in ("image", "img"):
        for name in names:
            other = volume_stem(name)
            pair = FLAT_PAIR.match(other) if other else None
            if pair and pair["case"] == match["case"] and pair["role"].lower() in ("label", "seg", "mask"):
                return image.parent / name
        return None
    labels = [n for n in names if (s := volume_stem(n)) is not None and is_label_name(s)]
    return image.parent / labels[0] if len(labels) == 1 else None


def reference_mask(volume: Any) -> tuple[np.ndarray | None, str]:
    """(binary uint8 label with the volume's shape, where it came from) or (None, why not)."""
    from core.errors import SlicewiseError
    from core.io import load_volume

    source = Path(getattr(volume, "source", "") or "")
    path = label_beside(source) if source.name else None
    if path is None:
        return None, "no label file beside the image"
    try:
        label = load_volume(path)
    except SlicewiseError as exc:
        return None, str(exc)
    if label.shape != volume.shape:
        return None, f"{path.name}: shape {label.shape} differs from the image's {volume.shape}"
    return (label.array != 0).astype(np.uint8), path.name


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def overlap_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of two binary masks."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def overlap_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice, IoU, precision, recall; 1.0 where both masks are empty (nothing to find, nothing found)."""

    def ratio(num: float, den: float) -> float:
        return 1.0 if den == 0 else num / den

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def hausdorff_mm(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], percentile: float | None = None
) -> float | None:
    """Symmetric Hausdorff distance (or its `percentile`) in mm; None when either mask is empty."""
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance

    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if not p.any() or not t.any():
        return None
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal call (always_return_as_numpy)
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            torch.from_numpy(p)[None, None].float(),
            torch.from_numpy(t)[None, None].float(),
            include_background=True,
            percentile=percentile,
            spacing=[float(s) for s in spacing],
        )
    value = float(value.reshape(-1)[0])
    return value if math.isfinite(value) else None


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict[str, float | None]:
    scores: dict[str, float | None] = dict(overlap_from_counts(*overlap_counts(pred, truth)))
    scores["hausdorff_mm"] = hausdorff_mm(pred, truth, spacing)
    scores["hd95_mm"] = hausdorff_mm(pred, truth, spacing, percentile=95)
    return scores


def summarise(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """`<key>_mean` and `<key>_sd` (population) over the rows that have a number for the key."""
    out: dict[str, float] = {}
    for key in keys:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if values:
            out[f"{key}_mean"] = float(np.mean(values))
            out[f"{key}_sd"] = float(np.std(values))
    return out


def slice_dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice per axial slice, float32 (z,); NaN where neither mask has a voxel."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    tp = (p & t).sum(axis=(1, 2)).astype(np.float64)
    total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * tp / total, np.nan).astype(np.float32)


def worst_slice(pred: np.ndarray, truth: np.ndarray) -> int:
    """The axial slice with the lowest Dice among those where either mask has voxels (0 when none)."""
    dice = slice_dice(pred, truth)
    return int(np.nanargmin(dice)) if np.isfinite(dice).any() else 0


def fullest_slice(*masks: np.ndarray | None) -> int:
    """The axial slice with the most voxels over the given masks (a good first look; 0 when all empty)."""
    counts = sum(np.count_nonzero(m, axis=(1, 2)) for m in masks if m is not None)
    return int(np.argmax(counts)) if np.any(counts) else 0


def dice_strip(dice: np.ndarray, current: int | None = None, width: int = 24, row: int = 4) -> np.ndarray:
    """Per-slice Dice as a vertical RGB strip (top = slice 0): red (0) to green (1), grey without
    voxels; the current slice outlined in white."""
    n = len(dice)
    colours = np.full((n, 3), 90, np.uint8)
    ok = np.isfinite(dice)
    d = np.clip(np.nan_to_num(dice), 0, 1)
    colours[ok, 0] = np.round(230 * (1 - d[ok])).astype(np.uint8)
    colours[ok, 1] = np.round(60 + 170 * d[ok]).astype(np.uint8)
    colours[ok, 2] = 60
    strip = np.repeat(np.repeat(colours[:, None, :], width, axis=1), row, axis=0)
    if current is not None and 0 <= current < n:
        strip[current * row, :] = 255
        strip[(current + 1) * row - 1, :] = 255
        strip[current * row : (current + 1) * row, [0, -1]] = 255
    return strip


# ---------------------------------------------------------------------------------------------
# A run's evaluation: cases worst first
# ---------------------------------------------------------------------------------------------


def cases_worst_first(evaluation: dict) -> list[dict]:
    """evaluation.json's per-case rows with a Dice, lowest Dice first."""
    rows = [
        r
        for r in evaluation.get("cases", [])
        if isinstance(r, dict) and isinstance(r.get("dice"), int | float)
    ]
    return sorted(rows, key=lambda r: r["dice"])


def case_table(rows: Sequence[dict]) -> list[dict]:
    """Rounded display rows: case, Dice, IoU, precision, recall, Hausdorff, HD95, crop recall, worst slice."""

    def fmt(value: Any, digits: int) -> Any:
        return round(float(value), digits) if isinstance(value, int | float) else None

    return [
        {
            "case": r.get("case", ""),
            "Dice": fmt(r.get("dice"), 4),
            "IoU": fmt(r.get("iou"), 4),
            "precision": fmt(r.get("precision"), 4),
            "recall": fmt(r.get("recall"), 4),
            "Hausdorff mm": fmt(r.get("hausdorff_mm"), 2),
            "HD95 mm": fmt(r.get("hd95_mm"), 2),
            "crop recall": fmt(r.get("crop_recall"), 4),
            "worst slice": r.get("worst_slice"),
        }
        for r in rows
    ]


def find_case_volume(case_id: str, paths: Sequence[Path | str]) -> Path | None:
    """The image (not a label) among `paths` that belongs to `case_id`: in a folder named after it, or a
    flat `<case>_image.*` file."""
    for raw in paths:
        path = Path(raw)
        stem = volume_stem(path.name)
        if stem is None or is_label_name(stem):
            continue
        match = FLAT_PAIR.match(stem)
        if path.parent.name == case_id or (
            match and match["case"] == case_id and match["role"].lower() in ("image", "img")
        ):
            return path
    return None


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def export_name(volume: Any, suffix: str) -> str:
    from core.prediction_files import file_stem

    return (
        f"{file_stem(volume)}_mask{suffix}" if suffix != DICOM_SEG_SUFFIX else f"{file_stem(volume)}{suffix}"
    )


def export_formats(volume: Any) -> dict[str, str]:
    """What a mask of `volume` can be exported as: NRRD and NIfTI always, DICOM SEG for a DICOM series."""
    files = (getattr(volume, "meta", {}) or {}).get("files") or []
    dicom = volume.meta.get("format") == "DICOM" and len(set(files)) == volume.shape[0]
    return {**EXPORT_FORMATS, **({"DICOM SEG (.dcm)": DICOM_SEG_SUFFIX} if dicom else {})}


def mask_file_bytes(volume: Any, mask: np.ndarray, suffix: str) -> bytes:
    """The mask as a `.nrrd` / `.nii.gz` file with the volume's geometry (core.io.writers.write_like), or
    as a DICOM SEG (`.dcm`) referencing the source series' slices (core.io.writers.write_dicom_seg)."""
    from core.io.writers import write_dicom_seg, write_like

    writer = write_dicom_seg if suffix == DICOM_SEG_SUFFIX else write_like
    with tempfile.TemporaryDirectory() as tmp:
        path = writer(volume, np.asarray(mask, dtype=np.uint8), Path(tmp) / f"mask{suffix}")
        return path.read_bytes()
