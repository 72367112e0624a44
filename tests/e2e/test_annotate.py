"""Annotate page: AppTest smoke test, and the real app in Chromium drawing a box on the canvas.

The browser test drags a box, checks the CSV row (within about 1 px), reloads and sees the box
again, deletes it (row gone) and undoes (row back). Screenshots go to /tmp/shots/.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.annotations import BoxStore
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from tests.e2e.conftest import drag, run_app

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "annotate.py")
SHOTS = Path("/tmp/shots")
N_SLICES = 12


def _write_case(root: Path) -> None:
    ph = chest_ct_phantom((N_SLICES, 128, 128), (5.0, 2.8, 2.8), seed=3)
    write_dicom_series(np.round(ph.hu).astype(np.int16), root / "ct" / "case0", spacing=(5.0, 2.8, 2.8))


def _texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.info, *at.error, *at.caption, *at.markdown)]
    return "\n".join(str(p) for p in parts)


def test_annotate_page_without_volumes(data_root):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="annotate_volume").value is None


def test_annotate_page_buttons_use_the_store(data_root, tmp_path):
    _write_case(data_root)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.session_state["annotate_z"] == N_SLICES // 2
    at.button(key="annotate_propose").click().run()
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    assert len(store) == 1 and store.rows()[0]["Annotator"] == "auto"
    assert "by auto" in _texts(at)
    at.button(key="annotate_propose_all").click().run()
    assert 1 < len(store) < N_SLICES
    at.button(key="annotate_undo").click().run()
    assert len(store) == 1
    at.button(key="annotate_delete").click().run()
    assert len(store) == 0 and "No box on this slice" in _texts(at)
    at.button(key="annotate_next_empty").click().run()
    assert at.session_state["annotate_z"] == N_SLICES // 2 + 1


def test_broken_csv_is_reported_not_overwritten(data_root, tmp_path):
    _write_case(data_root)
    csv_path = tmp_path / "annotations" / "lung_bbox.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text("Image,Xmin\nA,oops\n")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "line 1" in at.error[0].value and str(csv_path) in at.error[0].value
    assert csv_path.read_text() == "Image,Xmin\nA,oops\n"


def _wait_rows(store: BoxStore, predicate, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.rows() if store.path.exists() else []
        if predicate(rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"CSV never reached the expected state; last rows: {rows}")


def _canvas(page):
    canvas = page.get_by_test_id("stBidiComponentIsolated").locator("canvas.upper-canvas")
    canvas.wait_for(timeout=60_000)
    return canvas


@pytest.mark.e2e
def test_draw_reload_delete_undo_in_the_browser(page, tmp_path):
    root = tmp_path / "data"
    _write_case(root)
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    SHOTS.mkdir(exist_ok=True)
    with run_app(root, tmp_path) as url:
        page.goto(f"{url}/annotate?annotator=e2e")
        canvas = _canvas(page)
        size = canvas.bounding_box()
        assert round(size["width"]) == 512 and round(size["height"]) == 512
        drag(page, canvas, (100, 120), (400, 370))
        rows = _wait_rows(store, lambda r: len(r) == 1)
        page.screenshot(path=str(SHOTS / "annotate_drawn.png"))
        row = rows[0]
        tol = 1.5 / 512
        expected = (100 / 512, 120 / 512, 400 / 512, 370 / 512)
        assert [row[c] for c in ("Xmin", "Ymin", "Xmax", "Ymax")] == pytest.approx(expected, abs=tol)
        assert row["Slice"] == N_SLICES // 2 and row["Annotator"] == "e2e"

        page.reload()
        _canvas(page)
        page.get_by_text(f"Box Xmin {row['Xmin']:.4f}").wait_for()
        page.get_by_text(f"1 of {N_SLICES} slices annotated").wait_for()
        page.screenshot(path=str(SHOTS / "annotate_reloaded.png"))
        assert len(store) == 1  # showing the saved box again wrote nothing

        page.get_by_role("button", name="Delete box").click()
        _wait_rows(store, lambda r: r == [])
        page.get_by_text("No box on this slice").wait_for()

        page.get_by_role("button", name="Undo last change").click()
        rows = _wait_rows(store, lambda r: len(r) == 1)
        assert rows[0]["Xmin"] == row["Xmin"] and rows[0]["Ymax"] == row["Ymax"]
        page.get_by_text(f"Box Xmin {row['Xmin']:.4f}").wait_for()
        page.screenshot(path=str(SHOTS / "annotate_undone.png"))


def test_a_drawing_that_arrives_from_the_previous_slices_canvas_is_saved_there(data_root, tmp_path):
    """After Next, the old slice's canvas is on screen for a moment; a box dragged on it arrives under
    the old canvas's key. The page saves it to the slice it was drawn on, once, and an old canvas's
    already-handled state (e.g. before an Undo) never overwrites the store again."""
    from core.annotate import canvas_key
    from core.io import load_volume

    _write_case(data_root)
    volume = load_volume(data_root / "ct" / "case0")
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    z = N_SLICES // 2
    at.button(key="annotate_next").click().run()
    assert at.session_state["annotate_z"] == z + 1 and len(store) == 0
    late = {"objects": [{"type": "LabeledRect", "left": 100, "top": 80, "width": 300, "height": 250}]}
    at.session_state[canvas_key(volume.volume_id, z, 0)] = {"drawing": {"raw": late, "data": None}}
    at.run()
    assert not at.exception
    [row] = store.rows()
    assert row["Slice"] == z and row["Xmin"] == pytest.approx(100 / 512, abs=1e-3)
    at.button(key="annotate_undo").click().run()
    at.run()
    assert len(store) == 0, "the late drawing was saved again after Undo"
