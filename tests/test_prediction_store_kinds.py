"""Every kind of Prediction round-trips through the store with the volume's geometry."""

from __future__ import annotations

import numpy as np
import pytest

from core import predictions as pr
from core.volume import Volume


@pytest.fixture
def volume():
    array = np.random.default_rng(0).normal(size=(5, 12, 10)).astype(np.float32)
    return Volume(array, spacing=(2.0, 0.5, 0.7), origin=(1.0, -2.0, 3.0), modality="MR", volume_id="case-1")


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "runs" / "run-a" / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    return path


def _kinds(shape):
    rng = np.random.default_rng(1)
    z = shape[0]
    boxes = np.tile([0.1, 0.2, 0.8, 0.9], (z, 1)).astype(np.float32)
    boxes[1] = np.nan
    return {
        "boxes": dict(boxes=boxes),
        "classes": dict(label="HGG", probabilities={"LGG": 0.25, "HGG": 0.75}),
        "slices": dict(slice_probabilities=rng.random((z, 2)), classes=("LGG", "HGG"), label="LGG",
                       probabilities={"LGG": 0.6, "HGG": 0.4}),
        "heatmap": dict(heatmap=rng.random(shape).astype(np.float32), label="abnormal",
                        probabilities={"normal": 0.1, "abnormal": 0.9}),
        "mask": dict(mask=(rng.random(shape) > 0.7).astype(np.uint8)),
    }


@pytest.mark.parametrize("kind", ["boxes", "classes", "slices", "heatmap", "mask"])
def test_each_kind_round_trips(kind, volume, checkpoint, tmp_path):
    fields = _kinds(volume.shape)[kind]
    prediction = pr.Prediction(family="some_family", model="m", **fields)
    pr.save_prediction(volume, prediction, checkpoint, runs_root=tmp_path / "runs")
    [found] = pr.list_prediction_sets(volume.volume_id, tmp_path / "runs")
    assert found.fields == prediction.fields and found.family == "some_family" and not found.stale
    stored = pr.load_prediction(found)
    for name in prediction.fields:
        want, got = getattr(prediction, name), getattr(stored, name)
        if isinstance(want, np.ndarray):
            np.testing.assert_allclose(got, want, atol=1e-6, equal_nan=True)
            assert got.dtype == want.dtype
        else:
            assert got == pytest.approx(want) if isinstance(want, dict) else got == want


def test_arrays_that_do_not_fit_the_volume_are_refused_and_nothing_is_stored(volume, checkpoint, tmp_path):
    bad = pr.Prediction(family="f", mask=np.zeros((5, 12, 9), np.uint8))
    with pytest.raises(pr.PredictionStoreError, match=r"best\.ckpt: mask has shape"):
        pr.save_prediction(volume, bad, checkpoint, runs_root=tmp_path / "runs")
    assert pr.list_prediction_sets(volume.volume_id, tmp_path / "runs") == []
    with pytest.raises(ValueError, match="heatmap must be"):
        pr.Prediction(family="f", heatmap=np.zeros((12, 10)))


def test_an_orphan_array_file_is_reported_not_hidden(volume, checkpoint, tmp_path):
    sidecar = pr.save_prediction(volume, pr.Prediction(family="f", mask=np.ones(volume.shape, np.uint8)),
                                 checkpoint, runs_root=tmp_path / "runs")
    sidecar.unlink()
    problems = []
    assert pr.list_prediction_sets(volume.volume_id, tmp_path / "runs", on_error=problems.append) == []
    assert len(problems) == 1 and "cannot read the prediction sidecar" in str(problems[0])
