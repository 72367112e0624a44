"""Predict & review: predicted vs reference lung boxes per slice, IoU, a worst-first queue, CSV export.

The reference is the annotation file (`lung_bbox.csv`) for the volume; a demo phantom
without annotations falls back to its known ground truth. Exports use the annotation
file's own columns, so a model's boxes can be loaded, corrected and saved like a person's.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.annotations import COLUMNS, BoxStore, utc_now
from core.boxes import Box, box_iou, ordered_box
from core.volume import Volume


@dataclass(frozen=True)
class ReviewRow:
    """One slice with a reference box: how well the prediction matches it."""

    slice: int
    slice_id: str
    iou: float
    predicted: Box | None
    reference: Box


def predicted_boxes(boxes: np.ndarray) -> dict[int, Box]:
    """A predictor's (z, 4) fractions -> {slice: box}; NaN or empty rows are left out."""
    array = np.asarray(boxes, dtype=float)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"predicted boxes must have shape (z, 4), got {array.shape}")
    out = {}
    for z, row in enumerate(array):
        box = ordered_box(row)
        if box is not None:
            out[z] = box
    return out


def annotated_boxes(volume: Volume, csv_path: Path | str) -> dict[int, Box]:
    """{slice: box} of the volume's rows in the annotation file (none when the file is missing)."""
    store = BoxStore(csv_path)
    out = {}
    for z, row in store.for_volume(volume.volume_id).items():
        box = ordered_box([row["Xmin"], row["Ymin"], row["Xmax"], row["Ymax"]])
        if box is not None:
            out[int(z)] = box
    return out


def phantom_truth_boxes(volume: Volume) -> dict[int, Box]:
    """The demo generator's known lung boxes for a demo volume; {} for anything else."""
    if importlib.util.find_spec("core.demo") is None:
        return {}
    from core.demo import truth_for

    truth = truth_for(volume)
    if truth is None or not truth.boxes:
        return {}
    return {int(z): box for z, raw in truth.boxes.items() if (box := ordered_box(raw)) is not None}


def reference_boxes(volume: Volume, csv_path: Path | str) -> tuple[dict[int, Box], str]:
    """(boxes, where they come from): the annotations, else the phantom's ground truth."""
    boxes = annotated_boxes(volume, csv_path)
    if boxes:
        return boxes, "annotated"
    truth = phantom_truth_boxes(volume)
    return (truth, "phantom ground truth") if truth else ({}, "none")


def review_queue(predicted: Mapping[int, Box], reference: Mapping[int, Box],
                 slice_ids: Sequence[str]) -> list[ReviewRow]:
    """Every slice with a reference box, worst IoU first (a missing prediction counts as 0)."""
    rows = [
        ReviewRow(z, slice_ids[z] if 0 <= z < len(slice_ids) else f"#{z}",
                  box_iou(predicted.get(z), ref), predicted.get(z), ref)
        for z, ref in reference.items()
    ]
    return sorted(rows, key=lambda r: (r.iou, r.slice))


def iou_summary(rows: Sequence[ReviewRow]) -> dict[str, float]:
    """Mean, median, minimum IoU and the share of slices at IoU >= 0.5 / 0.75 (empty: {})."""
    if not rows:
        return {}
    ious = [r.iou for r in rows]
    return {
        "slices": len(ious),
        "mean": statistics.fmean(ious),
        "median": statistics.median(ious),
        "min": min(ious),
        "iou>=0.5": sum(i >= 0.5 for i in ious) / len(ious),
        "iou>=0.75": sum(i >= 0.75 for i in ious) / len(ious),
    }


def boxes_csv(predicted: Mapping[int, Box], volume: Volume, annotator: str) -> str:
    """The predicted boxes as CSV text in the `lung_bbox.csv` schema (SPEC section 3)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    updated = utc_now()
    for z in sorted(predicted):
        corners = (f"{v:.6f}" for v in predicted[z])
        writer.writerow([volume.slice_ids[z], *corners, volume.volume_id, z, annotator, updated])
    return buffer.getvalue()
