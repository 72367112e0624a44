"""The annotation loop on the Annotate page, in Chromium: confirm HU-rule proposals, "Train on these
boxes", watch the live status line reach DONE, get the run selected in "Proposals from", propose
for all slices with the model (cyan boxes under `model:<run>` on the unconfirmed slices, a person's
boxes untouched), confirm a model proposal with Enter, and go to the next uncertain slice.

One app for the module on a data root of two DICOM phantom CTs (two patients). The training job is
real (core.jobs, `python -m core train`): the quick preset made small through the page's
SLICEWISE_LOOP_SETTINGS (64 px, a few epochs, no ImageNet weights) so that it ends in well under a
minute on two cores.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.annotate import is_proposal
from core.annotations import BoxStore
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from tests.conftest import scratch
from tests.e2e.conftest import run_app
from tests.e2e.test_annotate_fast_drag import (
    ROOT_JS,
    drag_box,
    open_volume,
    shot,
    stage,
    wait_rows,
    wait_shown,
)

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "annotate.py")
SHAPE, SPACING = (16, 128, 128), (5.0, 2.8, 2.8)
LOOP_SETTINGS = "image_size=64,prepare_size=64,max_epochs=4,batch_size=8,pretrained=false"
N_CONFIRMED = 6
COORDS = ("Xmin", "Ymin", "Xmax", "Ymax")
KIND_JS = f"() => {{ const r = ({ROOT_JS})(); const b = r && r.querySelector('.bc-box');" \
          " return b && !b.hidden ? b.dataset.kind : null; }"

# the value a selectbox (found by its label) shows: its input's value or its text
SELECTED_JS = """([label, wanted]) => [...document.querySelectorAll('[data-testid=stSelectbox]')].some(e =>
  e.innerText.includes(label) && ((e.querySelector('input') || {}).value || e.innerText).includes(wanted))"""


def _write_root(root: Path) -> dict[str, object]:
    volumes = {}
    for k, name in enumerate(("loop_a", "loop_b")):
        ph = chest_ct_phantom(SHAPE, SPACING, seed=40 + k)
        write_dicom_series(np.round(ph.hu).astype(np.int16), root / "ct" / name, spacing=SPACING,
                           patient_id=f"LOOP{k}")
        volumes[name] = load_volume(root / "ct" / name)
    return volumes


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with scratch(tmp_path_factory, "annotate_loop") as tmp:
        volumes = _write_root(tmp / "data")
        env = {"SLICEWISE_LOOP_SETTINGS": LOOP_SETTINGS, "SLICEWISE_CPU_JOBS": "1"}
        with run_app(tmp / "data", tmp, extra_env=env) as url:
            yield url, BoxStore(tmp / "annotations" / "lung_bbox.csv"), volumes, tmp / "runs"


def _box(row: dict) -> list[float]:
    return [row[c] for c in COORDS]


def _status(page) -> str:
    return page.locator(".st-key-annotate_loop_status").first.inner_text()


def _wait_status(page, word: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        loc = page.locator(".st-key-annotate_loop_status")
        text = loc.first.inner_text() if loc.count() else ""
        if word in text:
            return text
        if "ERROR" in text:
            raise AssertionError(f"the loop job failed: {text}")
        page.wait_for_timeout(250)
    raise AssertionError(f"no {word} in the status line after {timeout:.0f} s: {text!r}")


@pytest.mark.e2e
@pytest.mark.train
def test_confirm_train_propose_with_the_model_and_go_to_the_uncertain_slice(app, page):
    url, store, volumes, runs = app
    volume = volumes["loop_a"]
    vid, n = volume.volume_id, volume.shape[0]
    open_volume(page, url, "loop_a", volume)
    first = n // 2 - N_CONFIRMED // 2
    keys = page.keyboard

    # HU-rule proposals on every slice, then Enter (confirm & next) on N_CONFIRMED of them
    page.get_by_role("button", name="Propose for all slices").click()
    proposed = wait_rows(store, vid, lambda r: len(r) >= N_CONFIRMED + 4
                         and all(is_proposal(x) for x in r.values()))
    page.locator("input[aria-label='Slice']").fill(str(first + 1))  # the Slice box counts from 1
    page.locator("input[aria-label='Slice']").press("Enter")
    wait_shown(page, vid, first)
    area = stage(page).bounding_box()
    page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)  # focus, draws nothing
    for k in range(N_CONFIRMED):
        page.wait_for_function(f"() => ({KIND_JS})() === 'rule'", polling="raf")
        keys.press("Enter")
        wait_shown(page, vid, first + k + 1)
    confirmed = set(range(first, first + N_CONFIRMED))
    rows = wait_rows(store, vid, lambda r: all(r[z]["Annotator"] == "e2e" for z in confirmed))
    assert all(_box(rows[z]) == pytest.approx(_box(proposed[z]), abs=1e-6) for z in confirmed)
    # and a box drawn by hand on the next (proposed) slice: a person's box the model must not replace
    hand_z = first + N_CONFIRMED
    drag_box(page, (0.15, 0.2, 0.8, 0.75))
    rows = wait_rows(store, vid, lambda r: r[hand_z]["Annotator"] == "e2e")
    people = {z: _box(r) for z, r in rows.items() if not is_proposal(r)}
    assert set(people) == confirmed | {hand_z}
    page.get_by_text(f"{len(people)} confirmed · {len(rows) - len(people)} proposed (unconfirmed)").wait_for()
    page.get_by_text(f"CT volumes: {len(people)} confirmed, {len(rows) - len(people)} proposed").wait_for()
    page.get_by_text(f"Trains on {len(people)} confirmed boxes of 1 volume; "
                     f"{len(rows) - len(people)} proposals (unconfirmed) left out").wait_for()

    # Train on these boxes: a live status line, then DONE; the run is selected in Proposals from
    started = time.monotonic()
    page.get_by_role("button", name="Train on these boxes").click()
    _wait_status(page, "RUNNING", timeout=60)
    page.locator(".st-key-annotate_loop_status [data-testid=stProgress]").first.wait_for()
    # the canvas stays usable while the job runs: a drag is saved on its slice
    page.locator(".st-key-annotate_prev button").first.click()
    wait_shown(page, vid, hand_z - 1)
    drag_box(page, (0.12, 0.18, 0.82, 0.78))
    wait_rows(store, vid, lambda r: _box(r[hand_z - 1]) == pytest.approx([0.12, 0.18, 0.82, 0.78], abs=0.02))
    people[hand_z - 1] = _box(store.for_volume(vid)[hand_z - 1])
    done = _wait_status(page, "DONE")
    trained_s = time.monotonic() - started
    run_name = next(p.name for p in runs.iterdir() if (p / "result.json").is_file())
    assert run_name in done
    page.wait_for_function(SELECTED_JS, arg=["Proposals from", run_name])  # selected once it is done
    page.get_by_text(f"Run {run_name} finished").wait_for()  # the toast
    shot(page, "annotate_loop_done.png")

    # Propose for all slices with the model, replacing the unconfirmed rule proposals
    page.get_by_text("Replace unconfirmed proposals").click()
    page.get_by_role("button", name="Propose for all slices").click()
    annotator = f"model:{run_name}"
    rows = wait_rows(store, vid, lambda r: any(x["Annotator"] == annotator for x in r.values())
                     and not any(x["Annotator"] == "auto" for x in r.values()))
    assert {z: _box(r) for z, r in rows.items() if not is_proposal(r)} == people  # untouched
    model_z = sorted(z for z, r in rows.items() if r["Annotator"] == annotator)
    assert set(model_z) == set(range(n)) - set(people)
    # a model proposal on screen is cyan, and Enter confirms it under the person's name
    target = max(z for z in model_z if z < min(people))
    model_box = _box(rows[target])
    page.locator("input[aria-label='Slice']").fill(str(target + 1))
    page.locator("input[aria-label='Slice']").press("Enter")
    wait_shown(page, vid, target)
    page.wait_for_function(f"() => ({KIND_JS})() === 'model'", polling="raf")
    page.get_by_text(f"Proposed box ({annotator}, cyan)").wait_for()
    page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)
    keys.press("Enter")
    wait_shown(page, vid, target + 1)
    rows = wait_rows(store, vid, lambda r: r[target]["Annotator"] == "e2e")
    assert _box(rows[target]) == pytest.approx(model_box, abs=1e-6)  # accepted as the model drew it
    people[target] = model_box

    # Next uncertain slice: an unconfirmed slice, with its score and the queue's length
    before = target + 1
    page.get_by_role("button", name="Next uncertain slice").click()
    moved = f"() => {{ const r = ({ROOT_JS})(); return !!r && r.dataset.slice !== '{before}'; }}"
    page.wait_for_function(moved, polling="raf", timeout=60_000)
    shown = int(page.evaluate(f"() => ({ROOT_JS})().dataset.slice"))
    assert shown not in people and shown != before
    caption = page.get_by_text(re.compile(r"Uncertainty \(tta\) of slice \d+: [0-9.]+, rank 1 of \d+ "))
    caption.wait_for()
    queue = int(re.search(r"rank 1 of (\d+)", caption.inner_text()).group(1))
    assert queue == n - len(people)
    shot(page, "annotate_loop_uncertain.png")
    # Q with the image focused: the next one in the queue (the slice on screen is skipped)
    page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)
    keys.press("q")
    moved = f"() => {{ const r = ({ROOT_JS})(); return !!r && r.dataset.slice !== '{shown}'; }}"
    page.wait_for_function(moved, polling="raf")
    second = int(page.evaluate(f"() => ({ROOT_JS})().dataset.slice"))
    assert second not in people and second != shown
    assert {z for z, r in store.for_volume(vid).items() if not is_proposal(r)} == set(people)  # no drawing

    # after a reload the newest loop job is shown
    page.reload()
    wait_shown(page, vid, n // 2)
    assert "DONE" in _wait_status(page, "DONE", timeout=30)
    print(f"\nloop job from Train on these boxes to DONE in the browser: {trained_s:.1f} s")


def test_a_name_that_reads_as_a_proposal_is_refused(data_root, tmp_path):
    _write_root(data_root)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="annotator").set_value("model:x").run()
    assert "type your own name" in at.sidebar.error[0].value
    at.button(key="annotate_propose").click().run()
    at.button(key="annotate_confirm").click().run()
    assert not at.exception
    rows = BoxStore(tmp_path / "annotations" / "lung_bbox.csv").rows()
    assert [r["Annotator"] for r in rows] == ["unknown"]  # confirmed, never under a proposal's name
    assert at.selectbox(key="annotate_proposer").options == ["HU rule"]
    assert at.button(key="annotate_next_uncertain").disabled


def test_train_on_these_boxes_says_why_it_cannot_start(data_root, tmp_path, monkeypatch):
    _write_root(data_root)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="annotator").set_value("dr_y").run()
    at.button(key="annotate_propose").click().run()  # a proposal only: nothing confirmed to train on
    wanted = "Trains on 0 confirmed boxes of 0 volumes; 1 proposal (unconfirmed) left out"
    assert any(c.value.startswith(wanted) for c in at.caption)
    at.button(key="annotate_train").click().run()
    assert not at.exception and "no confirmed lung box" in at.error[0].value
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    at.button(key="annotate_confirm").click().run()
    monkeypatch.setenv("SLICEWISE_LOOP_SETTINGS", "image_size")  # a malformed setting: said, not raised
    at.button(key="annotate_train").click().run()
    assert not at.exception and "SLICEWISE_LOOP_SETTINGS" in at.error[0].value
