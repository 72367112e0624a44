"""The annotation loop for real: DICOM phantom CTs, boxes confirmed in a BoxStore, "Train on these
boxes" as a real background job (core.jobs supervisor + `python -m core train`), then the run's
boxes stored as `model:<run>` proposals and the unannotated slices ordered by uncertainty."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from core import annotation_loop as loop
from core import annotation_review as review
from core import jobs
from core import model_proposals as mp
from core.annotate import is_proposal, propose_for_volume, volume_boxes
from core.annotations import BoxStore
from core.boxes import box_iou
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from core.volume import Volume
from tests.conftest import scratch

SHAPE, SPACING = (24, 64, 64), (5.0, 2.8, 2.8)
TINY = {"image_size": 64, "prepare_size": 64, "max_epochs": 2, "batch_size": 8, "pretrained": False}


def _write_root(base: Path) -> tuple[Path, list, list[np.ndarray]]:
    """Two phantom chest CTs (two patients) as DICOM under `base/data`; their true boxes."""
    volumes, truths = [], []
    for k in range(2):
        ph = chest_ct_phantom(SHAPE, SPACING, seed=20 + k)
        folder = base / "data" / "ct" / f"case{k}"
        write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=SPACING, patient_id=f"P{k}")
        volumes.append(load_volume(folder))
        truths.append(ph.boxes)
    return base / "data", volumes, truths


def _truth_rows(volume, boxes: np.ndarray) -> list[dict]:
    return [{"Image": volume.slice_ids[z], "Xmin": float(b[0]), "Ymin": float(b[1]), "Xmax": float(b[2]),
             "Ymax": float(b[3]), "Volume": volume.volume_id, "Slice": z}
            for z, b in enumerate(boxes) if not np.isnan(b).any()]


def _wait(runs: Path, job_id: str, timeout: float = 240.0) -> dict:
    """Poll as the page does until the job is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = loop.loop_status(runs, job_id)
        if status["final"]:
            return status
        time.sleep(0.3)
    raise AssertionError(f"{job_id} not done: {jobs.tail_log(job_id, 40, runs_root=runs)}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Patient 0's lung slices confirmed (plus HU-rule proposals on patient 1), trained from Annotate."""
    with scratch(tmp_path_factory, "loop") as base, pytest.MonkeyPatch.context() as mp_env:
        for name in ("SLICEWISE_GPU_JOBS", "SLICEWISE_CPU_JOBS"):
            mp_env.delenv(name, raising=False)
        mp_env.setenv("SLICEWISE_DATA", str(base / "data"))
        mp_env.setenv("SLICEWISE_RUNS", str(base / "runs"))
        mp_env.setenv("SLICEWISE_ANNOTATIONS", str(base / "annotations" / "lung_bbox.csv"))
        root, volumes, truths = _write_root(base)
        store = BoxStore(base / "annotations" / "lung_bbox.csv")
        store.upsert_many(_truth_rows(volumes[0], truths[0]), annotator="dr_a")
        n_rule = propose_for_volume(store, volumes[1])
        started = time.monotonic()
        job_id = loop.start_training(root, base / "runs", store.path, settings=TINY)
        status = _wait(base / "runs", job_id)
        seconds = time.monotonic() - started
        yield {"base": base, "root": root, "runs": base / "runs", "store": store, "volumes": volumes,
               "truths": truths, "job": job_id, "status": status, "seconds": seconds, "n_rule": n_rule}


@pytest.mark.train
def test_train_on_these_boxes_runs_a_job_on_the_confirmed_boxes(trained):
    status, runs, job_id = trained["status"], trained["runs"], trained["job"]
    assert status["state"] == jobs.DONE and status["error"] == "", jobs.tail_log(job_id, 40, runs_root=runs)
    assert status["run"] == runs / job_id and status["epoch"] == TINY["max_epochs"]
    assert status["metric"] is not None and status["text"].startswith("Trained: " + job_id)
    desc = json.loads((runs / job_id / "job.json").read_text())
    assert desc["origin"] == "annotate" and desc["kind"] == "train" and desc["family"] == "lung_localizer"
    n_confirmed = len(_truth_rows(trained["volumes"][0], trained["truths"][0]))
    assert desc["boxes"] == {"confirmed": n_confirmed, "rule": trained["n_rule"], "model": 0,
                             "used": n_confirmed}
    snapshot = Path(desc["settings"]["annotations_csv"])
    assert snapshot == runs / job_id / loop.SNAPSHOT_NAME  # recorded, so that a resume finds it
    assert desc["settings"]["image_size"] == 64 and desc["settings"]["backbone"] == "resnet18"  # quick
    kept = sorted(p.name for p in (runs / job_id / "checkpoints").glob("*.ckpt"))
    assert len(kept) == 2 and "last.ckpt" in kept  # the best one and last.ckpt
    # only the confirmed boxes were prepared: the rule's proposals of patient 1 were left out
    prepared = (runs / job_id / "prepared" / "boxes.csv").read_text().splitlines()[1:]
    assert len(prepared) <= n_confirmed and all(trained["volumes"][0].volume_id in r for r in prepared)
    snapshot_rows = BoxStore(snapshot).rows()
    assert len(snapshot_rows) == n_confirmed and not any(is_proposal(r) for r in snapshot_rows)
    assert sorted(p.name for p in (runs / job_id).glob("annotations*")) == [loop.SNAPSHOT_NAME]
    latest = loop.latest_loop_run(runs)
    assert latest is not None and latest.path == runs / job_id and latest.origin == "annotate"
    assert latest.label.startswith(f"{job_id} · val_iou ") and latest.annotator == f"model:{job_id}"
    assert [j.id for j in loop.loop_jobs(runs)] == [job_id]
    print(f"\nloop job: {trained['seconds']:.1f} s to DONE; {status['text']}")


def _mean_iou(store: BoxStore, volume, truth: np.ndarray) -> tuple[float, int]:
    rows = [r for z, r in volume_boxes(store, volume).items() if not np.isnan(truth[z]).any()]
    ious = [box_iou(tuple(map(float, truth[int(r["Slice"])])), (r["Xmin"], r["Ymin"], r["Xmax"], r["Ymax"]))
            for r in rows]
    return float(np.mean(ious)), len(ious)


def _random_box_iou(truth: np.ndarray, seed: int = 0, n: int = 2000) -> float:
    rng = np.random.default_rng(seed)
    lungs = truth[~np.isnan(truth).any(axis=1)]
    corners = np.sort(rng.uniform(0, 1, (n, 2, 2)), axis=1)  # (n, [lo, hi], [x, y])
    boxes = [(c[0, 0], c[0, 1], c[1, 0], c[1, 1]) for c in corners]
    return float(np.mean([box_iou(b, tuple(lungs[i % len(lungs)])) for i, b in enumerate(boxes)]))


@pytest.mark.train
def test_the_runs_boxes_land_as_model_proposals_on_an_unseen_patient(trained, tmp_path):
    run, (seen, unseen), truths = loop.latest_loop_run(trained["runs"]), trained["volumes"], trained["truths"]
    store = BoxStore(tmp_path / "lung_bbox.csv")
    person = next(z for z, b in enumerate(truths[1]) if not np.isnan(b).any())
    store.upsert(unseen.slice_ids[person], 0.1, 0.1, 0.3, 0.3, volume=unseen.volume_id, slice=person,
                 annotator="dr_a")
    rule = propose_for_volume(store, unseen)
    assert rule > 0

    written = mp.propose_with_model(store, unseen, run)  # proposals and persons' boxes stay
    assert written == unseen.shape[0] - 1 - rule
    written = mp.propose_with_model(store, unseen, run, overwrite=True)  # proposals are replaced
    assert written == unseen.shape[0] - 1
    rows = volume_boxes(store, unseen)
    assert rows[person]["Annotator"] == "dr_a" and (rows[person]["Xmax"], rows[person]["Ymax"]) == (0.3, 0.3)
    assert {r["Annotator"] for z, r in rows.items() if z != person} == {f"model:{run.name}"}
    assert store.undo(annotator="dr_a")  # one undo step takes the whole overwrite back
    before = {r["Annotator"] for z, r in volume_boxes(store, unseen).items() if z != person}
    assert before == {"auto", f"model:{run.name}"}
    store.redo(annotator="dr_a")

    model_iou, n = _mean_iou(store, unseen, truths[1])
    chance = _random_box_iou(truths[1])
    print(f"\nmodel proposals on an unseen patient: mean IoU {model_iou:.3f} on {n} lung slices; "
          f"random box {chance:.3f}")
    assert n >= 10 and model_iou > 0.5 and model_iou > chance + 0.3

    assert mp.propose_with_model(store, unseen, run, slices=[person]) == 0  # a person's box: never
    again = BoxStore(tmp_path / "again.csv")
    assert mp.propose_with_model(again, seen, run, slices=[3, 5]) == 2
    assert sorted(volume_boxes(again, seen)) == [3, 5]


@pytest.mark.train
def test_prefetch_keeps_the_whole_volume_so_one_slice_proposals_need_no_forward_pass(trained, tmp_path):
    run, seen = loop.latest_loop_run(trained["runs"]), trained["volumes"][0]
    fresh = Volume(seen.array.copy(), seen.spacing, modality="CT", volume_id="prefetch-copy",
                   slice_ids=[f"p{z}" for z in range(seen.shape[0])])
    one_by_one = mp.predict_boxes(fresh, run, [4])  # a few slices: predicted alone, nothing kept
    assert not mp.cached(fresh, run)
    thread = mp.prefetch(fresh, run)
    assert thread is not None and mp.prefetch(fresh, run) is None  # once per run and volume
    thread.join(timeout=120)
    assert mp.cached(fresh, run) and mp.prefetch(fresh, run) is None

    predictor = mp.predictor_for(run)
    calls = []
    original = predictor.predict
    predictor.predict = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        store = BoxStore(tmp_path / "lung_bbox.csv")
        assert mp.propose_with_model(store, fresh, run, slices=[4]) == 1
        assert calls == []  # read from the kept boxes
    finally:
        predictor.predict = original
    assert one_by_one[4] == pytest.approx(mp.predict_boxes(fresh, run, [4])[4], abs=1e-4)


@pytest.mark.train
def test_uncertainty_order_lists_only_unannotated_slices_most_uncertain_first(trained):
    run, unseen = loop.latest_loop_run(trained["runs"]), trained["volumes"][1]
    annotated = {0, 5, 6, 12}
    for method in ("tta", "rule"):
        started = time.perf_counter()
        order = mp.uncertainty_order(unseen, run, annotated, method=method)
        seconds = time.perf_counter() - started
        zs = [z for z, _ in order]
        scores = [s for _, s in order]
        assert sorted(zs) == sorted(set(range(unseen.shape[0])) - annotated)
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
        print(f"\n{method}: {seconds:.2f} s for {len(zs)} slices; top {order[:3]}")
        more = mp.uncertainty_order(unseen, run, annotated | {zs[0]}, method=method)  # kept: no prediction
        assert more == [item for item in order if item[0] != zs[0]]
    rule = dict(mp.uncertainty_order(unseen, run, annotated, method="rule"))
    no_lung = [z for z in rule if z not in mp.rule_boxes(unseen)]
    assert all(rule[z] == 1.0 for z in no_lung)  # the rule finds no lung there: most uncertain
    with pytest.raises(ValueError, match="method"):
        mp.uncertainty_order(unseen, run, annotated, method="entropy")


@pytest.mark.train
def test_lung_runs_lists_finished_lung_runs_newest_first(trained, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    source = trained["runs"] / trained["job"]

    def copy(name: str, **result) -> Path:
        """A copy of the trained run whose result.json points at its own checkpoint."""
        folder = runs / name
        shutil.copytree(source, folder)
        found = json.loads((folder / "result.json").read_text())
        best = folder / Path(found["best_checkpoint"]).relative_to(source)
        (folder / "result.json").write_text(json.dumps({**found, "best_checkpoint": str(best), **result}))
        return folder

    copy(trained["job"])
    (copy("older-run", finished="2026-01-01T00:00:00+00:00") / "job.json").unlink()
    running = copy("running-run")
    status = json.loads((running / "status.json").read_text())
    (running / "status.json").write_text(json.dumps({**status, "state": "RUNNING"}))
    other = copy("xray-run")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "family": "xray_classifier"}))
    (copy("no-result") / "result.json").unlink()

    found = mp.lung_runs(runs)
    assert [r.name for r in found] == [trained["job"], "older-run"]
    assert found[1].origin == "" and found[1].label.startswith("older-run · val_iou ")
    assert loop.latest_loop_run(runs).name == trained["job"]
    assert mp.lung_runs(tmp_path / "nowhere") == []

    first = mp.predictor_for(found[0])
    assert mp.predictor_for(found[0]) is first  # cached per run and checkpoint mtime
    os.utime(found[0].checkpoint, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert mp.predictor_for(found[0]) is not first
    with pytest.raises(Exception, match="not a finished lung localizer run"):
        mp.propose_with_model(BoxStore(tmp_path / "x.csv"), trained["volumes"][0], other)


def test_training_refuses_without_confirmed_boxes(data_root, tmp_path):
    ph = chest_ct_phantom((8, 32, 32), SPACING, seed=3)
    write_dicom_series(np.round(ph.hu).astype(np.int16), data_root / "ct" / "a", spacing=SPACING)
    volume = load_volume(data_root / "ct" / "a")
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    with pytest.raises(loop.LoopError, match="no confirmed lung box"):
        loop.start_training(data_root, tmp_path / "runs", store.path)  # no CSV at all
    assert propose_for_volume(store, volume) > 0
    found = loop.training_set(store.path, data_root)
    assert (found.confirmed, found.rule, found.used) == (0, found.proposed, 0) and found.rule > 0
    with pytest.raises(loop.LoopError, match="unconfirmed proposals are not trained on"):
        loop.start_training(data_root, tmp_path / "runs", store.path)
    store.upsert("elsewhere#0", 0.1, 0.1, 0.5, 0.5, volume="elsewhere", slice=0, annotator="dr_a")
    with pytest.raises(loop.LoopError, match="1 box"):
        loop.start_training(data_root, tmp_path / "runs", store.path)
    assert not (tmp_path / "runs").exists()  # nothing was started

    z = sorted(volume_boxes(store, volume))[0]
    store.upsert(volume.slice_ids[z], 0.2, 0.2, 0.8, 0.7, volume=volume.volume_id, slice=z, annotator="dr_a")
    found = loop.training_set(store.path, data_root)
    assert (found.confirmed, found.volumes, found.outside) == (1, 1, 1)
    assert found.text() == (f"Trains on 1 confirmed box of 1 volume; {found.proposed} proposals "
                            "(unconfirmed) left out; 1 box(es) of volumes not under the data root are "
                            "not used")
    assert loop.training_set(store.path, data_root, include_proposals=True).used == 1 + found.proposed
    assert review.confirmed_slices(volume_boxes(store, volume)) == {z}


def test_few_boxes_get_enough_optimizer_steps():
    quick = {"max_epochs": 5, "batch_size": 16, "val_fraction": 0.2}
    steps = loop.LOOP_MIN_STEPS
    assert loop.loop_epochs(30, quick) == min(steps, loop.LOOP_MAX_EPOCHS)  # 24 boxes: 1 step per epoch
    assert loop.loop_epochs(100, quick) == -(-steps // 5)  # 80 train boxes: 5 steps per epoch
    assert loop.loop_epochs(5000, quick) == 5  # plenty: the preset's epochs
    assert loop.loop_epochs(40, {"max_epochs": 1, "batch_size": 1, "val_fraction": 0.0}) == -(-steps // 40)
    assert loop.loop_epochs(0, {**quick, "max_epochs": 1}) == min(steps, loop.LOOP_MAX_EPOCHS)
    settings = loop.loop_settings("quick", n_boxes=30, overrides={"image_size": 64})
    assert settings["max_epochs"] >= 5 and settings["image_size"] == 64 and settings["save_top_k"] == 1
    assert loop.loop_settings("quick", n_boxes=30, overrides={"max_epochs": 2})["max_epochs"] == 2
    with pytest.raises(loop.LoopError, match="unknown preset"):
        loop.loop_settings("no-such-preset")


def test_a_failed_loop_job_says_why(data_root, tmp_path, monkeypatch):
    monkeypatch.delenv("SLICEWISE_CPU_JOBS", raising=False)
    ph = chest_ct_phantom((8, 32, 32), SPACING, seed=5)
    folder = data_root / "ct" / "gone"
    write_dicom_series(np.round(ph.hu).astype(np.int16), folder, spacing=SPACING)
    volume = load_volume(folder)
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    store.upsert_many(_truth_rows(volume, ph.boxes), annotator="dr_a")
    job_id = loop.start_training(data_root, tmp_path / "runs", store.path, settings=TINY)
    shutil.rmtree(folder)  # the series goes before the job prepares it
    status = _wait(tmp_path / "runs", job_id, timeout=120)
    assert status["state"] == jobs.ERROR and status["run"] is None
    assert "no training slice could be prepared" in status["error"]
    assert status["text"].startswith("Training error: ") and loop.latest_loop_run(tmp_path / "runs") is None
