"""Predict & review logic: ordering boxes, the worst-first queue, IoU summary, CSV export."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from core.annotations import COLUMNS, BoxStore
from core.box_review import (
    annotated_boxes,
    boxes_csv,
    iou_summary,
    ordered_box,
    predicted_boxes,
    reference_boxes,
    review_queue,
)
from core.volume import Volume


def _volume() -> Volume:
    return Volume(array=np.zeros((3, 8, 8), np.float32), modality="CT", volume_id="ct/case1",
                  slice_ids=["ct/case1#0", "ct/case1#1", "ct/case1#2"])


def test_ordered_box_sorts_clips_and_drops_bad_rows():
    assert ordered_box([0.8, 0.9, 0.2, 0.1]) == (0.2, 0.1, 0.8, 0.9)
    assert ordered_box([-0.5, 0.0, 1.5, 0.5]) == (0.0, 0.0, 1.0, 0.5)
    assert ordered_box([np.nan, 0, 1, 1]) is None
    assert ordered_box([0.3, 0.3, 0.3, 0.9]) is None
    assert ordered_box(None) is None


def test_predicted_boxes_skip_nan_rows_and_check_shape():
    boxes = np.array([[0.1, 0.1, 0.9, 0.9], [np.nan] * 4, [0.2, 0.2, 0.6, 0.6]])
    assert predicted_boxes(boxes) == {0: (0.1, 0.1, 0.9, 0.9), 2: (0.2, 0.2, 0.6, 0.6)}
    with pytest.raises(ValueError, match=r"shape \(z, 4\)"):
        predicted_boxes(np.zeros((3, 3)))


def test_review_queue_puts_the_worst_slice_first():
    predicted = {0: (0.1, 0.1, 0.9, 0.9), 1: (0.5, 0.5, 1.0, 1.0)}
    reference = {0: (0.1, 0.1, 0.9, 0.9), 1: (0.1, 0.1, 0.9, 0.9), 2: (0.2, 0.2, 0.8, 0.8)}
    queue = review_queue(predicted, reference, ["a", "b", "c"])
    assert [r.slice for r in queue] == [2, 1, 0]  # slice 2 has no prediction: IoU 0
    assert queue[0].iou == 0.0 and queue[0].predicted is None and queue[-1].iou == pytest.approx(1.0)
    assert queue[1].slice_id == "b"
    summary = iou_summary(queue)
    assert summary["slices"] == 3 and summary["min"] == 0.0 and summary["iou>=0.75"] == pytest.approx(1 / 3)
    assert iou_summary([]) == {}


def test_reference_boxes_come_from_the_annotation_file(tmp_path):
    volume = _volume()
    csv_path = tmp_path / "lung_bbox.csv"
    assert reference_boxes(volume, csv_path) == ({}, "none")
    store = BoxStore(csv_path)
    store.upsert("ct/case1#1", 0.2, 0.3, 0.7, 0.8, volume="ct/case1", slice=1, annotator="dr")
    store.upsert("other#0", 0.2, 0.3, 0.7, 0.8, volume="other", slice=0, annotator="dr")
    assert annotated_boxes(volume, csv_path) == {1: (0.2, 0.3, 0.7, 0.8)}
    assert reference_boxes(volume, csv_path) == ({1: (0.2, 0.3, 0.7, 0.8)}, "annotated")


def test_boxes_csv_uses_the_annotation_columns(tmp_path):
    volume = _volume()
    text = boxes_csv({0: (0.1, 0.2, 0.3, 0.4), 2: (0.5, 0.5, 0.9, 0.9)}, volume, "model:run/best.ckpt")
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS
    assert rows[1][:7] == ["ct/case1#0", "0.100000", "0.200000", "0.300000", "0.400000", "ct/case1", "0"]
    assert rows[2][0] == "ct/case1#2" and rows[2][7] == "model:run/best.ckpt"
    # the export loads back through the annotation store like a person's boxes
    (tmp_path / "lung_bbox.csv").write_text(text)
    assert [r["Image"] for r in BoxStore(tmp_path / "lung_bbox.csv").rows()] == ["ct/case1#0", "ct/case1#2"]
