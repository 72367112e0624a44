"""Saved predictions: Predict & review stores them, reuses them in a new session, flags them stale,
and the Viewer shows them as a box overlay (AppTest for the page logic, the real app in Chromium
for the pixels). Screenshots go to /tmp/shots/.

The checkpoint is real: one epoch of the tiny ResNet-18 from tests/test_jobs.py, trained in-process.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import predictions
from core.io.writers import write_dicom_series
from tests.conftest import scratch
from tests.e2e.conftest import run_app
from tests.test_jobs import TINY, write_tiny_prepared

REPO = Path(__file__).resolve().parents[2]
PREDICT_PAGE = str(REPO / "pages" / "predict.py")
VIEWER_PAGE = str(REPO / "pages" / "viewer.py")
SHOTS = Path("/tmp/shots")
LABEL = "lung_localizer:tiny/last.ckpt"
OVERLAY = f"Predicted boxes — {LABEL}"

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real one-epoch lung-localizer checkpoint (ResNet-18 at 32 px on the CPU)."""
    from core.jobs import format_setting
    from core.train.cli import train_from_cli

    with scratch(tmp_path_factory, "tiny_ckpt") as root:
        prepared = write_tiny_prepared(root / "prepared")
        settings = {**TINY, "max_epochs": 1, "device": "cpu"}
        overrides = [f"{k}={format_setting(v)}" for k, v in settings.items()]
        train_from_cli("lung_localizer", prepared, root / "tiny", overrides)
        yield root / "tiny" / "checkpoints" / "last.ckpt"


def _ct_series(data_root: Path) -> Path:
    """8 x 96 x 96 CT: a body ellipse with two dark lungs."""
    z, y, x = np.mgrid[:8, :96, :96]
    hu = np.full(z.shape, -1000, np.int16)
    hu[((y - 48) / 40.0) ** 2 + ((x - 48) / 44.0) ** 2 < 1] = 40
    hu[((y - 46) / 25.0) ** 2 + ((np.abs(x - 48) - 20) / 11.0) ** 2 < 1] = -850
    folder = data_root / "ct" / "case1"
    write_dicom_series(hu, folder, spacing=(3.0, 1.0, 1.0))
    return folder


def _install(checkpoint: Path, runs: Path) -> Path:
    target = runs / "tiny" / "checkpoints" / "last.ckpt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, target)
    return target


def _texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in (*at.info, *at.warning, *at.error, *at.caption))


# ---------------------------------------------------------------- AppTest: the page logic


def test_predict_page_saves_reuses_and_flags_stale_predictions(checkpoint, data_root, tmp_path):
    from core.io import load_volume

    volume = load_volume(_ct_series(data_root))
    ckpt = _install(checkpoint, tmp_path / "runs")

    at = AppTest.from_file(PREDICT_PAGE, default_timeout=90).run()
    assert not at.exception and [b.key for b in at.button] == ["predict_run"]
    at.button(key="predict_run").click().run()
    assert not at.exception, at.exception
    [saved] = predictions.list_prediction_sets(volume.volume_id, tmp_path / "runs")
    assert saved.label == LABEL and not saved.stale
    assert {m.label: m.value for m in at.metric}["Predicted slices"] == "8/8"
    stamp = saved.path.stat().st_mtime_ns

    fresh = AppTest.from_file(PREDICT_PAGE, default_timeout=90).run()  # a new session: no click needed
    assert not fresh.exception
    assert "Saved predictions of" in _texts(fresh) and OVERLAY in _texts(fresh)
    assert fresh.button(key="predict_again").label == "Predict again"
    assert {m.label: m.value for m in fresh.metric}["Predicted slices"] == "8/8"
    assert saved.path.stat().st_mtime_ns == stamp  # reused, not recomputed

    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # the checkpoint changed
    stale = AppTest.from_file(PREDICT_PAGE, default_timeout=90).run()
    assert "stale: checkpoint last.ckpt changed" in "\n".join(str(w.value) for w in stale.warning)
    stale.button(key="predict_again").click().run()
    assert not stale.exception
    assert not predictions.find_prediction_set(volume.volume_id, ckpt, tmp_path / "runs").stale

    viewer = AppTest.from_file(VIEWER_PAGE, default_timeout=60).run()
    assert not viewer.exception
    viewer.radio(key="viewer_mode").set_value("Server slider").run()  # the browser viewer has its own toggles
    viewer.checkbox(key=f"viewer_ov_{OVERLAY}").check().run()
    viewer.radio(key="viewer_mode").set_value("In the browser (fast)").run()
    stack = viewer.session_state["viewer_stack__start"][0]
    viewer.run()  # a rerun keeps the same stack: the browser payload stays cached
    assert viewer.session_state["viewer_stack__start"][0] == stack
    assert "predicted" in "\n".join(m.value for m in viewer.markdown)


def test_predict_to_dir_with_a_runs_root_fills_the_store(checkpoint, data_root, tmp_path):
    from core.infer import predict_to_dir
    from core.io import load_volume

    folder = _ct_series(data_root)
    csv_path = predict_to_dir(checkpoint, folder, tmp_path / "out", progress=lambda _m: None,
                              runs_root=tmp_path / "runs")
    [saved] = predictions.list_prediction_sets(load_volume(folder).volume_id, tmp_path / "runs")
    # last.ckpt is Lightning's link to the newest epoch file: the set belongs to the file it points to
    assert saved.checkpoint == checkpoint.resolve()
    assert saved.label == f"lung_localizer:{checkpoint.resolve().name}"
    assert len(predictions.load_prediction_set(saved.path)) == 8 and csv_path.is_file()


# ---------------------------------------------------------------- the real app in Chromium


def _coloured(page, red_only: bool = False) -> int:
    """Pixels of the viewer canvas that are not grey (or that are the predicted red)."""
    test = ("d[i] > 200 && d[i + 1] < 110 && d[i + 2] < 110" if red_only else
            "Math.abs(d[i] - d[i + 1]) > 40 || Math.abs(d[i + 1] - d[i + 2]) > 40")
    return page.locator(".sw-canvas").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        f" for (let i = 0; i < d.length; i += 4) if ({test}) n++; return n; }}")


@pytest.mark.e2e
def test_viewer_shows_predicted_boxes_saved_on_the_predict_page(checkpoint, page, tmp_path):
    data = tmp_path / "data"
    _ct_series(data)
    _install(checkpoint, tmp_path / "runs")
    SHOTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1300})  # shots see only the viewport
    with run_app(data, tmp_path) as url:
        page.goto(url)
        page.get_by_test_id("stSidebarNavLink").filter(has_text="Predict & review").click()
        page.get_by_role("button", name="Predict boxes for every slice").click()
        page.get_by_role("button", name="Predict again").wait_for(timeout=60_000)
        page.get_by_test_id("stImage").first.wait_for()
        page.screenshot(path=str(SHOTS / "predict_saved.png"), full_page=True)

        page.goto(url)  # a new browser session: the predictions must come from the store
        page.get_by_test_id("stSidebarNav").get_by_text("Viewer", exact=True).click()
        page.locator(".sw-root[data-painted]").wait_for()
        plain = page.locator(".sw-canvas").evaluate("c => c.toDataURL()")
        assert _coloured(page) == 0
        page.locator(".sw-layer").filter(has_text=OVERLAY).locator(".sw-on").check()  # the viewer's toggle
        page.wait_for_function(
            "(before) => { const c = [...document.querySelectorAll('*')].map(e => e.shadowRoot)"
            ".filter(Boolean).map(r => r.querySelector('.sw-canvas')).find(Boolean);"
            " return c && c.toDataURL() !== before; }", arg=plain)
        assert _coloured(page, red_only=True) > 40  # the predicted box outline, in red
        page.screenshot(path=str(SHOTS / "viewer_predictions.png"), full_page=True)
