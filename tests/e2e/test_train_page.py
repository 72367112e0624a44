"""Train and Predict & review pages: AppTest smoke and logic tests, and the real app in Chromium.

The browser test starts a tiny lung-localizer training from the Train page, watches the job
appear with epoch progress and a loss curve, cancels it and sees STOPPED. Screenshots go to
/tmp/shots/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from core import jobs
from tests.e2e.conftest import run_app
from tests.test_jobs import TINY, alive, wait_for, write_tiny_prepared

REPO = Path(__file__).resolve().parents[2]
TRAIN_PAGE = str(REPO / "pages" / "train.py")
PREDICT_PAGE = str(REPO / "pages" / "predict.py")
SHOTS = Path("/tmp/shots")


def _app(page: str) -> AppTest:
    at = AppTest.from_file(page, default_timeout=60)
    return at.run()


def _texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.info, *at.error, *at.success, *at.warning, *at.caption, *at.markdown)]
    return "\n".join(str(p) for p in parts)


# ---------------------------------------------------------------- AppTest


def test_train_page_with_no_runs(data_root):
    at = _app(TRAIN_PAGE)
    assert not at.exception
    assert "No jobs yet" in _texts(at)
    assert at.selectbox(key="train_family").value == "lung_localizer"
    # without a GPU the form opens on the family's quick CPU preset ...
    quick = "train_set_lung_localizer_quick_"
    assert at.radio(key="train_preset_lung_localizer").value == "quick"
    assert at.number_input(key=quick + "max_epochs").value == 5
    assert at.selectbox(key=quick + "backbone").value == "resnet18"
    # ... and the reference preset is the family's defaults
    at.radio(key="train_preset_lung_localizer").set_value("reference").run()
    assert at.number_input(key="train_set_lung_localizer_reference_max_epochs").value == 100
    assert at.selectbox(key="train_set_lung_localizer_reference_backbone").value == "resnet50"
    assert at.checkbox(key="train_set_lung_localizer_reference_augment").value is True


def test_train_page_refuses_bad_settings_before_starting(data_root):
    write_tiny_prepared(data_root / "lung_prepared")
    at = _app(TRAIN_PAGE)
    at.number_input(key="train_set_lung_localizer_quick_max_epochs").set_value(-3)
    at.button[0].click()  # the form's "Start training"
    at.run()

    assert not at.exception
    assert "max_epochs=-3 is out of range: max_epochs must be >= 1" in _texts(at)
    assert jobs.list_jobs() == []


def test_train_page_says_why_a_data_set_cannot_work_before_starting(data_root):
    at = _app(TRAIN_PAGE)
    data = at.selectbox(key="train_data_lung_localizer")
    assert data.value.label == "annotated slices of the data root"
    assert "No lung boxes annotated yet" in "\n".join(e.value for e in at.error)
    assert "Home → Create demo data" in "\n".join(e.value for e in at.error)  # where a trainable set is
    [start] = [b for b in at.button if b.label == "Start training"]
    assert start.disabled


EVALUATION = {
    "confusion_matrix": {"classes": ["NORMAL", "PNEUMONIA"], "matrix": [[5, 1], [2, 8]]},
    "roc": {"fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.8, 1.0], "auc": 0.9},
    "summary": {"accuracy": 0.8125, "sensitivity": 0.8},
    "cases": [{"case": "p1", "truth": "PNEUMONIA", "predicted": "PNEUMONIA"}],
}


def test_train_page_shows_a_finished_runs_evaluation(data_root):
    """Any family's evaluation.json is drawn in the job detail: metrics, confusion matrix, ROC, cases;
    a finished job offers no Resume and the banner of a started job is gone."""
    runs_root = data_root.parent / "runs"
    writer = ("import json, pathlib, sys\n"
              "run = pathlib.Path(sys.argv[1])\n"
              f"(run / 'evaluation.json').write_text(json.dumps({EVALUATION!r}))\n"
              "(run / 'metrics.jsonl').write_text(json.dumps({'epoch': 0, 'train_loss': 0.7, 'val_loss': 0.6,"
              " 'val_acc': 0.75}) + '\\n')\n")
    job = jobs.submit_command(lambda run: [sys.executable, "-c", writer, str(run)], runs_root=runs_root)
    assert wait_for(job.id, runs_root, jobs.FINAL_STATES).state == jobs.DONE

    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.session_state["train_started"] = job.id
    at.run()

    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["accuracy"] == "0.8125" and metrics["sensitivity"] == "0.8"
    figures = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]
    assert figures == ["Loss: train vs validation", "Validation metrics", "Confusion matrix", "ROC curve"]
    assert "Started job" not in _texts(at)
    assert not [b for b in at.button if b.label == "Resume"]
    cases = [frame.value for frame in at.dataframe if "case" in frame.value.columns]
    assert list(cases[0]["case"]) == ["p1"]


def test_predict_page_with_no_runs(data_root):
    at = _app(PREDICT_PAGE)
    assert not at.exception
    assert "No checkpoint" in _texts(at)


@pytest.mark.train
def test_train_page_starts_a_job_with_the_changed_settings(data_root):
    write_tiny_prepared(data_root / "lung_prepared")
    at = _app(TRAIN_PAGE)
    data = at.selectbox(key="train_data_lung_localizer")
    assert data.value.label == "lung_prepared"  # the prepared folder first, the data root last
    at.radio(key="train_preset_lung_localizer").set_value("reference").run()
    at.number_input(key="train_set_lung_localizer_reference_max_epochs").set_value(1)
    at.selectbox(key="train_set_lung_localizer_reference_backbone").set_value("resnet18")
    at.checkbox(key="train_set_lung_localizer_reference_pretrained").uncheck()
    at.selectbox(key="train_device").set_value("cpu")
    at.button[0].click()  # the form's "Start training"
    at.run()

    assert not at.exception
    [job] = jobs.list_jobs()
    try:
        assert "Started job" in _texts(at)
        assert job.settings == {"max_epochs": 1, "backbone": "resnet18", "pretrained": False, "device": "cpu"}
        assert at.selectbox(key="train_job_pick").value == job.id
    finally:
        if not jobs.get(job.id).final:
            jobs.cancel(job.id)


@pytest.mark.train
def test_predict_page_reviews_a_trained_checkpoint(data_root, tmp_path):
    from core.annotations import BoxStore
    from core.io import load_volume
    from core.io.writers import write_dicom_series

    hu = np.full((4, 64, 64), -1000, np.int16)
    hu[:, 8:56, 8:56] = 40  # body
    hu[:, 16:48, 12:52] = -850  # lungs
    series = data_root / "ct" / "case1"
    write_dicom_series(hu, series, spacing=(2.0, 1.0, 1.0))
    volume = load_volume(series)
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    for z in (1, 2):
        store.upsert(volume.slice_ids[z], 12 / 64, 16 / 64, 52 / 64, 48 / 64, volume=volume.volume_id,
                     slice=z, annotator="test")
    run = data_root.parent / "runs" / "manual-run"
    prepared = write_tiny_prepared(tmp_path / "prepared")
    overrides = [f"--set={k}={jobs.format_setting(v)}" for k, v in {**TINY, "max_epochs": 1}.items()]
    cmd = [sys.executable, "-m", "core", "train", "--family", "lung_localizer", "--data", str(prepared),
           "--out", str(run), *overrides]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)

    at = _app(PREDICT_PAGE)
    assert not at.exception
    assert Path(at.selectbox(key="predict_checkpoint").value).parent.parent == run
    at.button[0].click()
    at.run(timeout=120)

    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predicted slices"] == "4/4" and metrics["Reference"] == "annotated"
    assert 0.0 <= float(metrics["Mean IoU"]) <= 1.0
    queue = at.dataframe[0].value
    assert sorted(queue["slice"]) == [2, 3] and list(queue["IoU"]) == sorted(queue["IoU"])
    [image] = at.get("image")
    assert "IoU" in image.proto.imgs[0].caption
    [download] = at.get("download_button")
    assert download.proto.label.startswith("Export predicted boxes")


# ---------------------------------------------------------------- the real app in Chromium


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def _pick_option(page, label: str, option: str) -> None:
    """Open the select labelled `label` and pick `option`. The options only exist while the select is
    open; a click that lands while the page is still laying out (the settings expander opening, a
    rerun) leaves it closed, so the click is repeated until the option shows."""
    select = page.get_by_label(label, exact=True)
    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(4):
        select.scroll_into_view_if_needed()
        select.click()
        try:
            choice.wait_for(timeout=5_000)
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            continue
        choice.click()
        break
    else:
        _shot(page, f"select_{label}_closed.png")
        raise AssertionError(f"the {label!r} select never showed {option!r}")
    expect(select).to_have_value(option)


def _wait_for_epochs(job_id: str, runs_root: Path, n: int, timeout: float) -> None:
    """Wait (bounded) until the trainer has logged `n` epochs, reading its files as the page does."""
    deadline = time.monotonic() + timeout
    while len(jobs.metrics(job_id, runs_root=runs_root)) < n:
        job = jobs.get(job_id, runs_root=runs_root)
        assert not job.final and time.monotonic() < deadline, jobs.tail_log(job_id, 40, runs_root=runs_root)
        time.sleep(0.5)


@pytest.mark.e2e
@pytest.mark.train
def test_train_page_start_follow_cancel(page, tmp_path):
    data_root = tmp_path / "data"
    write_tiny_prepared(data_root / "lung_prepared", n_train=8)
    with run_app(data_root, tmp_path) as url:
        page.goto(url)  # the app's own navigation, as a user gets there
        page.get_by_test_id("stSidebarNavLink").filter(has_text="Train").click()
        page.get_by_role("button", name="Start training").wait_for()
        page.get_by_text(re.compile(r"^Settings \(prefilled")).click()
        page.get_by_label("max_epochs", exact=True).wait_for()  # the expander has opened
        _pick_option(page, "backbone", "resnet18")
        for key, value in (("image_size", "32"), ("batch_size", "4"), ("num_workers", "0"),
                           ("max_epochs", "200")):
            field = page.get_by_label(key, exact=True)
            field.fill(value)
            field.press("Tab")
        page.get_by_text("pretrained", exact=True).click()
        _shot(page, "train_form.png")
        page.get_by_role("button", name="Start training").click()

        page.get_by_text("Started job").wait_for()
        [job] = jobs.list_jobs(tmp_path / "runs")
        assert job.settings["backbone"] == "resnet18" and job.settings["max_epochs"] == 200
        page.get_by_text("Epoch", exact=True).wait_for()
        # the loss curve is drawn after the first epoch: the trainer's start (importing torch) is slow on
        # a loaded machine, so its files are waited for first (bounded), then the page gets 60 s to show it
        _wait_for_epochs(job.id, tmp_path / "runs", 1, timeout=400)
        loss_chart = page.get_by_test_id("stPlotlyChart").first
        loss_chart.wait_for(timeout=60_000)
        for words in ("train loss", "validation loss", "epoch"):  # legend and axis titles
            expect(loss_chart).to_contain_text(words)
        # by the time the curve shows, later epochs may be running: any "epoch k of 200"
        page.get_by_text(re.compile(r"epoch \d+ of 200")).first.wait_for(timeout=60_000)
        page.get_by_test_id("stPlotlyChart").first.scroll_into_view_if_needed()
        _shot(page, "train_running.png")

        running = jobs.get(job.id, runs_root=tmp_path / "runs")
        pids = jobs.group_members(running.status["pgid"])
        page.get_by_role("button", name="Cancel").click()
        stopped = page.get_by_test_id("stAlertContentWarning").get_by_text("Stopped: cancelled")
        stopped.wait_for(timeout=30_000)
        stopped.scroll_into_view_if_needed()
        _shot(page, "train_stopped.png")

        assert wait_for(job.id, tmp_path / "runs", jobs.FINAL_STATES, timeout=5).state == jobs.STOPPED
        assert not [pid for pid in pids if alive(pid)]
        assert json.loads((job.dir / "status.json").read_text())["cancel_requested"] is True
        page.get_by_role("button", name="Resume").wait_for()
        expect(page.get_by_text("Started job")).to_have_count(0)  # the banner went with the job


@pytest.mark.train
def test_predict_page_lists_suiting_volumes_first_and_asks_before_another_modality(data_root, tmp_path):
    """A lung localizer and a data root with a brain MRI (listed first by name) and a chest CT: the CT
    comes first; picking the MRI warns and runs nothing until "run anyway" is ticked."""
    import nibabel as nib

    from core import predictions
    from core.io import load_volume
    from core.io.writers import write_dicom_series

    brain = data_root / "a_brats" / "P1"
    brain.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(0, 900, (32, 32, 6)).astype(np.float32),
                             np.eye(4)), brain / "P1_flair.nii.gz")
    hu = np.full((4, 32, 32), -1000, np.int16)
    hu[:, 4:28, 4:28] = 40
    write_dicom_series(hu, data_root / "z_ct" / "case1", spacing=(2.0, 1.0, 1.0))
    run = data_root.parent / "runs" / "manual-run"
    overrides = [f"--set={k}={jobs.format_setting(v)}" for k, v in {**TINY, "max_epochs": 1}.items()]
    subprocess.run([sys.executable, "-m", "core", "train", "--family", "lung_localizer", "--data",
                    str(write_tiny_prepared(tmp_path / "prepared")), "--out", str(run), *overrides],
                   cwd=REPO, check=True, capture_output=True)
    runs_root = data_root.parent / "runs"
    mri = load_volume(brain / "P1_flair.nii.gz").volume_id

    at = _app(PREDICT_PAGE)
    volumes = at.selectbox(key="predict_volume")
    assert volumes.options[0] == "z_ct/case1  ·  DICOM series  ·  CT"
    assert volumes.options[-1] == "a_brats/P1/P1_flair.nii.gz  ·  NIfTI  ·  MR  ·  not for this model"
    assert not at.warning and [b.label for b in at.button] == ["Predict boxes for every slice"]

    volumes.set_value(volumes.options[-1]).run()
    assert not at.exception
    [warning] = at.warning
    assert "is MR, but Lung localizer" in warning.value and "made for CT" in warning.value
    assert not at.button  # nothing to run yet
    assert predictions.list_prediction_sets(mri, runs_root) == []

    [anyway] = at.checkbox
    assert anyway.label.startswith("Run Lung localizer") and anyway.label.endswith("on this MR volume anyway")
    anyway.check().run()
    [run_button] = at.button
    run_button.click().run(timeout=120)
    assert not at.exception, at.exception
    assert len(predictions.list_prediction_sets(mri, runs_root)) == 1  # run once confirmed
