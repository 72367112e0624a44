"""bench.bench_loop on a tiny synthetic CT: the whole loop scripted in Chromium still runs end to end
(open, confirm rule proposals, Train on these boxes, the run's boxes proposed on every slice).

Two epochs at 64 px (SLICEWISE_LOOP_SETTINGS) keep it short; it checks the script and the page's
labels it relies on, not the model's quality (bench_loop's full run measures that)."""

from __future__ import annotations

import pytest

from bench.bench_loop import ANNOTATOR, run_loop

pytestmark = [pytest.mark.e2e, pytest.mark.train]


def test_bench_loop_runs_end_to_end(browser):
    out: dict = {}
    run_loop(None, confirm=4, train_timeout=240, out=out, browser=browser,  # the session's Playwright
             loop_settings="max_epochs=2,image_size=64,prepare_size=64", phantom_shape=(20, 96, 96))
    assert set(out["phases"]) == {"open", "confirm", "train", "propose"}
    assert out["train_state"] == "DONE"
    assert out["auto_selected"]  # the page selects the run whose job it watched finish
    assert out["confirmed"] == 4
    rows = out["rows"]
    assert len(rows) == out["n"]  # every slice has a box: 4 confirmed, the rest the model's proposals
    assert sum(r["Annotator"] == ANNOTATOR for r in rows.values()) == 4
    assert out["kinds"]["model"] == out["n"] - 4
    assert out["model_iou"] is not None and out["mean_box_iou"] is not None
