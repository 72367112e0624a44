"""A family is one module: a toy family registered from outside core/models trains as a background
job, predicts through core.infer, is stored, listed and drawn as Viewer layers, and its run shows up
on Home, with no family-specific code anywhere in those paths."""

from __future__ import annotations

import time

import numpy as np
import pytest

from core import catalog, jobs, predictions, runs
from core.io.writers import write_nifti

# tests.toy_family registers itself when imported: only inside the toy_env fixture (tests/conftest.py),
# never at collection, so that no other test sees a sixth family.


def _wait_done(job_id, root, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(job_id, runs_root=root)
        if job.state in jobs.FINAL_STATES:
            return job
        time.sleep(0.2)
    raise AssertionError(jobs.tail_log(job_id, 40, runs_root=root))


@pytest.mark.train
def test_a_toy_family_goes_through_every_path_the_app_uses(toy_env):
    from core.infer import load_predictor, predict_to_dir
    from core.models import get_spec
    from core.overlay import prediction_layers
    from tests import toy_family

    root, runs_root = toy_env / "data", toy_env / "runs"
    assert get_spec("toy_blobs").review == "mask"
    assert [c.label for c in jobs.candidate_datasets("toy_blobs", root)] == ["toy_set"]

    job = jobs.submit("toy_blobs", root / "toy_set", {"max_epochs": 6}, device="cpu", runs_root=runs_root)
    job = _wait_done(job.id, runs_root)
    assert job.state == jobs.DONE, jobs.tail_log(job.id, 40, runs_root=runs_root)
    assert len(runs.metrics(job.dir)) == 6 and runs.best_metric(job.dir)[0] == "val_loss"
    [entry] = catalog.list_runs(runs_root)
    assert entry.family == "toy_blobs" and entry.best_metric is not None  # Home's runs table

    image, truth, side = toy_family.blob_volume(seed=777)
    path = write_nifti(image, toy_env / "inputs" / "blobs.nii.gz")
    out = predict_to_dir(job.dir, path.parent, toy_env / "out", progress=lambda _m: None, runs_root=runs_root)
    assert out.name == "probabilities.csv" and "blobs" in out.read_text()
    assert all((toy_env / "out" / f"blobs_{kind}.nrrd").is_file() for kind in ("mask", "heatmap"))

    from core.io import load_volume

    volume = load_volume(path)
    prediction = load_predictor(job.dir).predict(volume)
    dice = 2 * np.sum(prediction.mask * truth) / (prediction.mask.sum() + truth.sum())
    assert dice > 0.8, f"the toy network did not learn the blobs (Dice {dice:.2f})"
    assert prediction.label == toy_family.CLASSES[side]

    [saved] = predictions.list_prediction_sets(volume.volume_id, runs_root)
    assert saved.family == "toy_blobs" and not saved.stale
    assert set(saved.fields) == {"label", "probabilities", "heatmap", "mask"}
    stored = predictions.load_prediction(saved)
    np.testing.assert_array_equal(stored.mask, prediction.mask)
    np.testing.assert_allclose(stored.heatmap, prediction.heatmap, atol=1e-6)
    assert stored.label == prediction.label
    layers = prediction_layers(saved, stored, 0)
    assert sorted(layer.kind for layer in layers.values()) == ["heatmap", "mask"]
