"""Train page, the data set before Start: what training will use (the family's dataset_summary),
the demo set and the data root named plainly, Start disabled with the reason; and in Chromium a
job that finishes: the start banner goes, the curves are labelled, the jobs table shows "best".
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

import core.models
from core import jobs
from tests.e2e.conftest import run_app

REPO = Path(__file__).resolve().parents[2]
TRAIN_PAGE = str(REPO / "pages" / "train.py")
SHOTS = Path("/tmp/shots")
PLUGIN = "tests.summary_family"


@pytest.fixture
def summary_family(monkeypatch):
    """The toy box family with a dataset_summary, registered for this test only."""
    monkeypatch.setenv(core.models.PLUGIN_ENV, PLUGIN)
    yield "summary_boxes"
    core.models._REGISTRY.pop("summary_boxes", None)
    core.models._PLUGINS.discard(PLUGIN)
    sys.modules.pop(PLUGIN, None)  # registered again by the next test that names it


def _boxes(folder: Path, rows: list[tuple[str, int, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["Volume,Slice,Xmin,Ymin,Xmax,Ymax,annotator"]
    lines += [f"{volume},{z},10,10,50,50,{who}" for volume, z, who in rows]
    (folder / "boxes.csv").write_text("\n".join(lines) + "\n")
    return folder


def _page(family: str) -> AppTest:
    at = AppTest.from_file(TRAIN_PAGE, default_timeout=60)
    at.session_state["train_family"] = family
    return at.run()


def _start(at: AppTest):
    [start] = [b for b in at.button if b.label == "Start training"]
    return start


def test_one_patient_the_page_says_validation_uses_slice_blocks(data_root, summary_family):
    _boxes(data_root / "one_patient", [("CT-1", z, "reader") for z in range(6)] + [("CT-1", 9, "auto")])
    at = _page(summary_family)
    assert not at.exception
    info = "\n".join(e.value for e in at.info)
    assert "What training will use" in info
    assert "6 confirmed boxes from 1 patient(s); 1 proposals left out" in info
    assert "blocks of neighbouring slices" in info
    assert not _start(at).disabled


def test_two_patients_keep_the_patient_split_and_the_summary_follows_the_settings(data_root, summary_family):
    _boxes(data_root / "two", [("CT-1", 1, "reader"), ("CT-2", 3, "reader"), ("CT-2", 4, "model:run1")])
    at = _page(summary_family)
    info = "\n".join(e.value for e in at.info)
    assert "whole patients held out" in info and "1 proposals left out" in info
    # a changed setting changes what the page says, before Start
    at.selectbox(key=f"train_set_{summary_family}_quick_split").set_value("blocks").run()
    at.checkbox(key=f"train_set_{summary_family}_quick_include_proposals").check().run()
    info = "\n".join(e.value for e in at.info)
    assert "blocks of neighbouring slices" in info and "left out" not in info
    assert jobs.list_jobs() == []  # nothing started


def test_no_confirmed_boxes_disables_start_with_the_reason(data_root, summary_family):
    _boxes(data_root / "proposals_only", [("CT-1", z, "auto") for z in range(4)])
    at = _page(summary_family)
    assert "no confirmed boxes yet" in "\n".join(e.value for e in at.error)
    assert "0 confirmed boxes" in "\n".join(e.value for e in at.info)  # and what it would use
    assert _start(at).disabled


def test_the_demo_set_and_the_data_root_are_named_plainly(data_root):
    demo = data_root / "demo"
    (demo / "truth").mkdir(parents=True)
    (demo / "manifest.json").write_text(json.dumps({"cases": []}))
    at = _page("lung_localizer")
    labels = at.selectbox(key="train_data_lung_localizer").options
    assert labels == ["demo data (demo)", "annotated slices of the data root"]
    # the demo set trains on its ground truth: nothing refused
    assert not at.error and not _start(at).disabled


@pytest.mark.e2e
@pytest.mark.train
def test_a_finished_job_drops_the_banner_labels_its_curves_and_shows_best(page, tmp_path):
    data_root = tmp_path / "data"
    _boxes(data_root / "two", [("CT-1", 1, "reader"), ("CT-2", 3, "reader")])
    page.set_viewport_size({"width": 1600, "height": 1000})
    with run_app(data_root, tmp_path, {core.models.PLUGIN_ENV: PLUGIN}) as url:
        page.goto(url)
        page.get_by_test_id("stSidebarNavLink").filter(has_text="Train").click()
        family = page.get_by_test_id("stSelectbox").filter(has_text="Model family")
        family.click()
        page.get_by_role("option", name="Summary boxes (a test family)").click()
        page.get_by_text("What training will use").wait_for()
        expect(page.get_by_text("whole patients held out")).to_be_visible()
        page.get_by_role("button", name="Start training").click()
        page.get_by_text(re.compile(r"Started job .* \((SUBMITTED|QUEUED|RUNNING)\)")).wait_for()
        [job] = jobs.list_jobs(tmp_path / "runs")
        deadline = time.monotonic() + 240
        while not jobs.get(job.id, runs_root=tmp_path / "runs").final:
            assert time.monotonic() < deadline, jobs.tail_log(job.id, 40, runs_root=tmp_path / "runs")
            time.sleep(0.5)
        assert jobs.get(job.id, runs_root=tmp_path / "runs").state == jobs.DONE
        expect(page.get_by_text("Started job")).to_have_count(0, timeout=15_000)  # the banner went
        chart = page.get_by_test_id("stPlotlyChart").first
        chart.wait_for(timeout=30_000)
        for words in ("train loss", "validation loss", "epoch", "loss"):  # legend and axis titles
            expect(chart).to_contain_text(words)
        expect(page.get_by_role("button", name="Resume")).to_have_count(0)  # finished: nothing to resume
        SHOTS.mkdir(exist_ok=True)
        for width, height in ((1600, 1000), (1366, 768)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(800)
            # the jobs table fits: no column, "best" included, scrolled out of sight
            sizes = page.get_by_test_id("stDataFrame").first.evaluate(
                "e => { const s = e.querySelector('.dvn-scroller'); return [s.scrollWidth, s.clientWidth]; }")
            assert sizes[0] <= sizes[1] + 1, (width, sizes)
            page.get_by_test_id("stDataFrame").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / f"train_done_{width}.png"))
