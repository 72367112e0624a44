"""core.predictions: the persistent store of predicted boxes per (checkpoint, volume).

Volumes are real DICOM series written with core.io.writers. The store only records a checkpoint's
path and modification time, so these tests use plain files as checkpoints (a real trained
checkpoint goes through the store in tests/e2e/test_predictions_overlay.py).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from core import predictions as pr
from core.annotations import COLUMNS
from core.io import load_volume
from core.io.writers import write_dicom_series

FAMILY = "lung_localizer"


@pytest.fixture
def volume(data_root):
    hu = np.full((5, 32, 32), -1000, np.int16)
    hu[:, 4:28, 4:28] = 40
    write_dicom_series(hu, data_root / "ct" / "case1", spacing=(2.0, 1.0, 1.0))
    return load_volume(data_root / "ct" / "case1")


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


def _checkpoint(runs: Path, run: str = "run-a", name: str = "best.ckpt") -> Path:
    path = runs / run / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def _boxes(n: int, shift: float = 0.0) -> np.ndarray:
    return np.array([[0.1 + shift, 0.2, 0.8, 0.9 - z / 100] for z in range(n)], np.float32)


def test_save_list_load_round_trip(volume, runs):
    ckpt = _checkpoint(runs)
    boxes = _boxes(5)
    boxes[3] = np.nan  # a slice without a box is left out
    path = pr.save_predictions(volume, boxes, ckpt, family=FAMILY, runs_root=runs)

    assert path.parent.parent == runs / "predictions" and path.suffix == ".csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert [r["Image"] for r in rows] == [volume.slice_ids[z] for z in (0, 1, 2, 4)]
    assert {r["Volume"] for r in rows} == {volume.volume_id}
    assert {r["Annotator"] for r in rows} == {"lung_localizer:run-a/best.ckpt"}
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["checkpoint"] == str(ckpt.resolve()) and sidecar["family"] == FAMILY
    assert sidecar["checkpoint_mtime"] == pytest.approx(ckpt.stat().st_mtime)
    assert sidecar["slices"] == 5 and sidecar["created"]

    [found] = pr.list_prediction_sets(volume.volume_id, runs)
    assert found.label == "lung_localizer:run-a/best.ckpt" and found.path == path
    assert found.checkpoint == ckpt.resolve() and not found.stale and found.stale_reason == ""
    assert found.overlay_name == "Predicted boxes — lung_localizer:run-a/best.ckpt"
    loaded = pr.load_prediction_set(path)
    assert sorted(loaded) == [0, 1, 2, 4]
    for z, box in loaded.items():
        np.testing.assert_allclose(box, boxes[z], atol=1e-6)
    assert pr.find_prediction_set(volume.volume_id, ckpt, runs) == found
    assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no temporary file


def test_saving_again_replaces_the_set_and_other_checkpoints_add_sets(volume, runs):
    a, b = _checkpoint(runs, "run-a"), _checkpoint(runs, "run-b")
    pr.save_predictions(volume, _boxes(5), a, family=FAMILY, runs_root=runs)
    path = pr.save_predictions(volume, _boxes(5, shift=0.05), a, family=FAMILY, runs_root=runs)
    pr.save_predictions(volume, _boxes(5), b, family=FAMILY, runs_root=runs)

    sets = pr.list_prediction_sets(volume.volume_id, runs)
    assert [s.label for s in sets] == ["lung_localizer:run-a/best.ckpt", "lung_localizer:run-b/best.ckpt"]
    assert pr.load_prediction_set(path)[0][0] == pytest.approx(0.15)
    from core.overlay import prediction_layers

    layers = [layer for i, s in enumerate(sets)
              for layer in prediction_layers(s, pr.load_prediction(s), i).values()]
    assert len({layer.colour for layer in layers}) == 2 and not any(layer.visible for layer in layers)
    assert pr.find_prediction_set(volume.volume_id, _checkpoint(runs, "run-c"), runs) is None
    assert pr.list_prediction_sets("another-volume", runs) == []


def test_an_ensemble_is_one_set_with_both_checkpoints(volume, runs):
    a, b = _checkpoint(runs, "run-a"), _checkpoint(runs, "run-b")
    pr.save_predictions(volume, _boxes(5), [a, b], family=FAMILY, runs_root=runs)
    [found] = pr.list_prediction_sets(volume.volume_id, runs)
    assert found.label == "lung_localizer:run-a/best.ckpt+run-b/best.ckpt"
    assert found.checkpoints == (a.resolve(), b.resolve())
    assert pr.find_prediction_set(volume.volume_id, [a, b], runs) == found
    assert pr.find_prediction_set(volume.volume_id, a, runs) is None


def test_a_changed_checkpoint_flags_the_set_stale_but_keeps_it(volume, runs):
    ckpt = _checkpoint(runs)
    pr.save_predictions(volume, _boxes(5), ckpt, family=FAMILY, runs_root=runs)
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # retrained in place

    [found] = pr.list_prediction_sets(volume.volume_id, runs)
    assert found.stale and "best.ckpt changed" in found.stale_reason
    assert "stale" in pr.describe(found)
    assert pr.find_prediction_set(volume.volume_id, ckpt, runs).stale
    assert len(pr.load_prediction_set(found.path)) == 5  # still loadable

    pr.save_predictions(volume, _boxes(5), ckpt, family=FAMILY, runs_root=runs)  # predict again
    assert not pr.find_prediction_set(volume.volume_id, ckpt, runs).stale
    ckpt.unlink()
    [gone] = pr.list_prediction_sets(volume.volume_id, runs)
    assert gone.stale and "no longer exists" in gone.stale_reason


def test_names_are_safe_and_checkpoints_outside_the_runs_folder_keep_their_file_name(volume, runs, tmp_path):
    outside = tmp_path / "elsewhere" / "model.ckpt"
    outside.parent.mkdir()
    outside.write_bytes(b"weights")
    assert pr.checkpoint_name(outside, runs) == "model.ckpt"
    assert pr.safe_name("ct/case 1") != pr.safe_name("ct_case_1")
    folder = pr.volume_dir("../../etc/passwd", runs)
    assert folder.parent == runs / "predictions" and not folder.name.startswith(".")
    path = pr.save_predictions(volume, _boxes(5), outside, family=FAMILY, runs_root=runs)
    assert pr.load_prediction_set(path) and pr.list_prediction_sets(volume.volume_id, runs)[0].label == (
        "lung_localizer:model.ckpt")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: [["Image", "X0", "Y0"], *rows[1:]], r"line 1: expected the columns"),
        (lambda rows: [rows[0], [*rows[1][:1], "wide", *rows[1][2:]], *rows[2:]], r"line 2: .*numbers"),
        (lambda rows: [rows[0], rows[1], [*rows[2][:3], "1.7", *rows[2][4:]]], r"line 3: .*\[0, 1\]"),
        (lambda rows: [rows[0], rows[1][:5]], r"line 2: expected 9 fields, got 5"),
        (lambda rows: [rows[0], [rows[1][0], "0.5", "0.2", "0.5", *rows[1][4:]]], r"line 2: empty box"),
        (lambda rows: [], r"line 1: .*empty file"),
    ],
)
def test_a_broken_csv_is_an_error_naming_the_file_and_line(volume, runs, edit, message):
    path = pr.save_predictions(volume, _boxes(5), _checkpoint(runs), family=FAMILY, runs_root=runs)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(edit(rows))
    with pytest.raises(pr.PredictionStoreError, match=message) as info:
        pr.load_prediction_set(path)
    assert str(path) in str(info.value)


def test_missing_or_binary_csv_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(pr.PredictionStoreError, match=r"missing\.csv: cannot read"):
        pr.load_prediction_set(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(pr.PredictionStoreError, match=r"binary\.csv: not a CSV file"):
        pr.load_prediction_set(binary)


def test_a_broken_sidecar_raises_or_is_reported_and_skipped(volume, runs):
    good = pr.save_predictions(volume, _boxes(5), _checkpoint(runs, "run-a"), family=FAMILY, runs_root=runs)
    bad = pr.save_predictions(volume, _boxes(5), _checkpoint(runs, "run-b"), family=FAMILY, runs_root=runs)
    bad.with_suffix(".json").write_text("{not json")
    with pytest.raises(pr.PredictionStoreError, match=rf"{bad.with_suffix('.json').name}: not a prediction"):
        pr.list_prediction_sets(volume.volume_id, runs)
    problems: list = []
    sets = pr.list_prediction_sets(volume.volume_id, runs, on_error=problems.append)
    assert [s.path for s in sets] == [good] and len(problems) == 1
    bad.with_suffix(".json").unlink()
    with pytest.raises(pr.PredictionStoreError, match=r"cannot read the prediction sidecar"):
        pr.list_prediction_sets(volume.volume_id, runs)


def test_boxes_of_the_wrong_shape_are_refused(volume, runs):
    ckpt = _checkpoint(runs)
    with pytest.raises(pr.PredictionStoreError, match=r"best\.ckpt: predicted boxes must have shape"):
        pr.save_predictions(volume, np.zeros((5, 3)), ckpt, family=FAMILY, runs_root=runs)
    with pytest.raises(pr.PredictionStoreError, match="no checkpoint given"):
        pr.save_predictions(volume, _boxes(5), [], family=FAMILY, runs_root=runs)


def test_predicted_colours_differ_from_annotated_and_truth_overlays():
    from pages._ui.overlays import STYLES

    others = {colour for colour, _opacity, _style in STYLES.values()}
    assert not others & set(pr.PREDICTED_BOX_COLOURS)
