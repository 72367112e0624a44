"""Inference from self-describing checkpoints: load_predictor, ensembles, predict CLI round trip, errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import CheckpointError, VolumeReadError
from tests.conftest import scratch

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "backbone=resnet18",
    "num_workers=0",
    "pretrained=false",
    "image_size=32",
    "batch_size=8",
    "max_epochs=1",
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two real checkpoints from one-epoch runs: a ResNet-18 and a ResNet-18 with another seed."""
    from core.models.lung_localizer.synthetic import phantom_dataset
    from core.train.cli import train_from_cli

    with scratch(tmp_path_factory, "infer") as root:
        data = phantom_dataset(root / "prepared", range(0, 2), range(50, 51), size=32)
        train_from_cli("lung_localizer", data, root / "a", TINY)
        train_from_cli("lung_localizer", data, root / "b", [*TINY, "seed=1"])
        yield {"a": root / "a" / "checkpoints" / "last.ckpt", "b": root / "b" / "checkpoints" / "last.ckpt"}


@pytest.fixture
def ct_series(data_root) -> tuple[Path, list[str]]:
    from core.io.writers import write_dicom_series
    from core.phantoms import chest_ct_phantom

    phantom = chest_ct_phantom((6, 48, 48), spacing=(5.0, 3.7, 3.7), seed=7)
    folder = data_root / "chest_007"
    uids = write_dicom_series(phantom.hu.round().astype(np.int16), folder, spacing=(5.0, 3.7, 3.7))
    return folder, uids


def test_predictor_returns_fraction_boxes_per_slice_and_is_cached(checkpoints, ct_series):
    from core.infer import load_predictor
    from core.io import load_volume

    predictor = load_predictor(checkpoints["a"], device="cpu")
    assert predictor.family == "lung_localizer"
    assert load_predictor(checkpoints["a"], device="cpu") is predictor
    boxes = predictor.predict_volume(load_volume(ct_series[0]))
    assert boxes.shape == (6, 4) and boxes.dtype == np.float32
    assert np.isfinite(boxes).all() and boxes.min() >= 0.0 and boxes.max() <= 1.0


def test_cache_is_keyed_by_modification_time(checkpoints, tmp_path):
    import shutil

    from core.infer import load_predictor

    copy = tmp_path / "copy.ckpt"
    shutil.copy(checkpoints["a"], copy)
    first = load_predictor(copy, device="cpu")
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_predictor(copy, device="cpu") is not first


def test_ensemble_of_checkpoints_averages_boxes(checkpoints, ct_series):
    from core.infer import load_predictor
    from core.io import load_volume

    volume = load_volume(ct_series[0])
    a = load_predictor(checkpoints["a"], device="cpu").predict_volume(volume)
    b = load_predictor(checkpoints["b"], device="cpu").predict_volume(volume)
    both = load_predictor([checkpoints["a"], checkpoints["b"]], device="cpu")
    assert "+" in both.name
    np.testing.assert_allclose(both.predict_volume(volume), (a + b) / 2, atol=1e-6)


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_cli_round_trip_writes_the_lung_bbox_csv(checkpoints, ct_series, tmp_path):
    folder, uids = ct_series
    out = tmp_path / "pred"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "predict",
            "--checkpoint",
            str(checkpoints["a"]),
            "--input",
            str(folder),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "SLICEWISE_RUNS": str(tmp_path / "runs")},
    )
    assert result.returncode == 0, result.stderr
    # the Viewer finds the same boxes in the prediction store of the runs root
    assert len(list((tmp_path / "runs" / "predictions").glob("*/*.csv"))) == 1
    files = list(out.glob("*.csv"))
    assert len(files) == 1
    with files[0].open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["Image", "Xmin", "Ymin", "Xmax", "Ymax", "Volume", "Slice", "Annotator", "Updated"]
    rows = _read_csv(files[0])
    assert [r["Image"] for r in rows] == uids
    assert [int(r["Slice"]) for r in rows] == list(range(6))
    for row in rows:
        x0, y0, x1, y1 = (float(row[c]) for c in ("Xmin", "Ymin", "Xmax", "Ymax"))
        assert 0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0
        assert "lung_localizer" in row["Annotator"] and "last.ckpt" in row["Annotator"]


def test_predict_to_dir_accepts_an_ensemble_and_a_folder_of_volumes(checkpoints, ct_series, tmp_path):
    from core.infer import predict_to_dir

    folder, uids = ct_series
    messages: list[str] = []
    path = predict_to_dir(
        f"{checkpoints['a']},{checkpoints['b']}", folder.parent, tmp_path / "out", progress=messages.append
    )
    rows = _read_csv(path)
    assert len(rows) == len(uids) and "+" in rows[0]["Annotator"]
    assert any("slices predicted" in m for m in messages)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    from core.infer import load_predictor

    with pytest.raises(CheckpointError, match="missing.ckpt: checkpoint file not found"):
        load_predictor(tmp_path / "missing.ckpt", device="cpu")


def test_foreign_checkpoint_is_refused(tmp_path):
    import torch

    from core.infer import load_predictor

    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="foreign.ckpt: not a Slicewise checkpoint"):
        load_predictor(path, device="cpu")


def test_checkpoint_needing_pickled_code_is_refused(tmp_path):
    import torch

    from core.infer import load_predictor

    path = tmp_path / "pickled.ckpt"
    torch.save({"slicewise": {"family": "lung_localizer", "model_args": {}}, "obj": Path("x")}, path)
    with pytest.raises(CheckpointError, match="pickled.ckpt: cannot be loaded as a weights-only checkpoint"):
        load_predictor(path, device="cpu")


def test_weights_that_do_not_fit_are_refused(checkpoints, tmp_path):
    import torch

    from core.infer import load_predictor

    raw = torch.load(checkpoints["a"], map_location="cpu", weights_only=True)
    raw["slicewise"]["model_args"]["backbone"] = "resnet50"
    path = tmp_path / "mismatch.ckpt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="mismatch.ckpt: weights do not fit"):
        load_predictor(path, device="cpu")


def test_missing_input_is_a_volume_read_error(checkpoints, tmp_path):
    from core.infer import predict_to_dir

    with pytest.raises(VolumeReadError, match="nowhere"):
        predict_to_dir(checkpoints["a"], tmp_path / "nowhere", tmp_path / "out")


def test_a_run_folder_stands_for_its_best_checkpoint(checkpoints, tmp_path):
    import json

    from core.infer import best_checkpoint_of_run, load_predictor

    run = checkpoints["a"].parent.parent
    best = Path(json.loads((run / "result.json").read_text())["best_checkpoint"])
    assert best_checkpoint_of_run(run) == best
    assert load_predictor(run, device="cpu").family == "lung_localizer"
    with pytest.raises(CheckpointError, match="without checkpoints"):
        best_checkpoint_of_run(tmp_path)
