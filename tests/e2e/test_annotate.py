"""Annotate page: AppTest smoke test, and the real app in Chromium drawing a box on the canvas.

The browser test drags a box, moves it, resizes it by a corner and replaces it with a new drag,
checking the CSV row each time (within about 1 px), reloads and sees the box again, deletes it (row
gone) and undoes (row back). Screenshots go to /tmp/shots/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.annotations import BoxStore
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from tests.e2e.conftest import run_app
from tests.e2e.test_annotate_fast_drag import drag_box, wait_rows, wait_shown

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


@pytest.mark.e2e
def test_draw_move_resize_replace_reload_delete_undo_in_the_browser(page, tmp_path):
    root = tmp_path / "data"
    _write_case(root)
    from core.io import load_volume

    volume = load_volume(root / "ct" / "case0")
    vid, z = volume.volume_id, N_SLICES // 2
    store = BoxStore(tmp_path / "annotations" / "lung_bbox.csv")
    tol = 2.0 / 512

    def box_of(rows):
        return [rows[z][c] for c in ("Xmin", "Ymin", "Xmax", "Ymax")]

    with run_app(root, tmp_path) as url:
        page.goto(f"{url}/annotate?annotator=e2e")
        wait_shown(page, vid, z)
        drag_box(page, (0.2, 0.25, 0.8, 0.7))
        rows = wait_rows(store, vid, lambda r: len(r) == 1)
        assert box_of(rows) == pytest.approx((0.2, 0.25, 0.8, 0.7), abs=tol)
        assert rows[z]["Slice"] == z and rows[z]["Annotator"] == "e2e"
        look = page.get_by_test_id("bc-box").evaluate(
            "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).borderTopColor]")
        assert look == ["rgba(0, 0, 0, 0)", "rgb(255, 75, 75)"]  # a thin red outline, no fill

        drag_box(page, (0.5, 0.5, 0.55, 0.45))  # inside: moves it
        rows = wait_rows(store, vid, lambda r: abs(r[z]["Xmin"] - 0.25) < tol)
        assert box_of(rows) == pytest.approx((0.25, 0.2, 0.85, 0.65), abs=tol)
        drag_box(page, (0.85, 0.65, 0.9, 0.75))  # the lower right corner: resizes it
        rows = wait_rows(store, vid, lambda r: abs(r[z]["Xmax"] - 0.9) < tol)
        assert box_of(rows) == pytest.approx((0.25, 0.2, 0.9, 0.75), abs=tol)
        drag_box(page, (0.05, 0.9, 0.3, 0.95))  # outside: a new box replaces it
        rows = wait_rows(store, vid, lambda r: abs(r[z]["Ymin"] - 0.9) < tol)
        assert box_of(rows) == pytest.approx((0.05, 0.9, 0.3, 0.95), abs=tol) and len(rows) == 1
        row = rows[z]

        # Delete, then more page runs: the drags still held in the canvas's value never come back
        page.locator(".st-key-annotate_delete button").first.click()
        wait_rows(store, vid, lambda r: r == {})
        page.locator(".st-key-annotate_next button").first.click()
        wait_shown(page, vid, z + 1)
        page.locator(".st-key-annotate_prev button").first.click()
        wait_shown(page, vid, z)
        page.get_by_text("No box on this slice").wait_for()
        assert store.for_volume(vid) == {}
        page.locator(".st-key-annotate_undo button").first.click()
        rows = wait_rows(store, vid, lambda r: len(r) == 1)
        assert box_of(rows) == [row["Xmin"], row["Ymin"], row["Xmax"], row["Ymax"]]
        row = rows[z]

        page.reload()
        wait_shown(page, vid, z)
        page.get_by_text(f"Box Xmin {row['Xmin']:.4f}").wait_for()
        page.get_by_text(f"Slice {z + 1} of {N_SLICES} · 1 confirmed · 0 proposed").wait_for()
        page.screenshot(path=str(SHOTS / "annotate_reloaded.png"))
        assert len(store) == 1 and store.get(row["Image"]) == row  # showing the saved box wrote nothing

        page.locator(".st-key-annotate_delete button").first.click()
        wait_rows(store, vid, lambda r: r == {})
        page.get_by_text("No box on this slice").wait_for()
        page.locator(".st-key-annotate_undo button").first.click()
        rows = wait_rows(store, vid, lambda r: len(r) == 1)
        assert box_of(rows) == [row["Xmin"], row["Ymin"], row["Xmax"], row["Ymax"]]
        page.get_by_text(f"Box Xmin {row['Xmin']:.4f}").wait_for()
        page.screenshot(path=str(SHOTS / "annotate_undone.png"))
