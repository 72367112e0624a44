"""The Viewer in the real app and Chromium: pick a series, step slices, read HU, see a bad file's error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from core.io.writers import write_dicom_series
from tests.e2e.conftest import run_app

pytestmark = pytest.mark.e2e
SHOTS = Path("/tmp/shots")

# The viewer lives in a shadow root; these run in the page. A stack is "painted" when the slice on
# the canvas belongs to the stack the viewer holds now (a new stack keeps the old picture until its
# first frame is decoded), optionally a given slice of it.
VIEWER_ROOT = ("[...document.querySelectorAll('*')].map(e => e.shadowRoot).filter(Boolean)"
               ".map(r => r.querySelector('.sw-root')).find(Boolean)")
PAINTED = f"""(index) => {{
  const r = {VIEWER_ROOT};
  return !!r && r.dataset.painted !== undefined && r.dataset.paintedStack === r.dataset.stack
    && (index === null || r.dataset.painted === String(index));
}}"""
# Pixels of the painted canvas within 3 of each colour (the overlays are drawn opaque).
COUNT_COLOURS = f"""(colours) => {{
  const r = {VIEWER_ROOT};
  if (!r || r.dataset.paintedStack !== r.dataset.stack) return colours.map(() => 0);
  const c = r.querySelector('.sw-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return colours.map(([red, green, blue]) => {{
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
      if (Math.abs(d[i] - red) <= 3 && Math.abs(d[i + 1] - green) <= 3 && Math.abs(d[i + 2] - blue) <= 3) n++;
    return n;
  }});
}}"""
MASK_GREEN, BOX_YELLOW = (0, 200, 80), (255, 210, 0)  # pages/_ui/overlays.py STYLES


def _series(root: Path) -> np.ndarray:
    """12 x 96 x 96 CT: air outside a body ellipse whose HU rises 10 per slice, two darker 'lungs'."""
    z, y, x = np.mgrid[:12, :96, :96]
    hu = np.full(z.shape, -1000, np.int16)
    body = ((y - 48) / 40.0) ** 2 + ((x - 48) / 44.0) ** 2 < 1
    hu[body] = (20 + 10 * z)[body]
    lungs = ((y - 46) / 25.0) ** 2 + ((np.abs(x - 48) - 20) / 11.0) ** 2 < 1
    hu[lungs & (z > 1)] = -800
    write_dicom_series(hu, root / "ct" / "series_a", spacing=(3.0, 0.8, 0.8))
    return hu


def _wait_painted(page, index: int | None = None) -> None:
    page.wait_for_function(PAINTED, arg=index)


def _open_viewer(page, url: str) -> None:
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
    _wait_painted(page)


def _wait_colours(page, colours: list[tuple[int, int, int]], at_least: int) -> list[int]:
    """Wait until the painted canvas shows at least `at_least` pixels of every colour; the counts."""
    page.wait_for_function(f"(colours) => ({COUNT_COLOURS})(colours).every(n => n >= {at_least})",
                           arg=colours)
    return page.evaluate(COUNT_COLOURS, colours)


def _layer_toggle(page, name: str):
    """The on/off checkbox of a layer in the viewer's layer list (in its shadow root)."""
    return page.locator(".sw-layer").filter(has_text=name).locator(".sw-on")


def _canvas_pixels(page) -> str:
    return page.locator(".sw-canvas").evaluate("c => c.toDataURL()")


def test_viewer_steps_slices_reads_hu_and_survives_a_bad_file(page, tmp_path):
    root = tmp_path / "data"
    hu = _series(root)
    (root / "zz_broken.nii.gz").write_bytes(b"this is not a NIfTI file")
    SHOTS.mkdir(exist_ok=True)
    with run_app(root, tmp_path) as url:
        _open_viewer(page, url)
        index = page.locator(".sw-index")
        expect(index).to_have_text("axial slice 7 / 12")
        first = _canvas_pixels(page)

        page.locator(".sw-canvas").hover()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        expect(index).to_have_text("axial slice 9 / 12")
        _wait_painted(page, 8)
        assert _canvas_pixels(page) != first  # a different slice is painted

        page.mouse.wheel(0, -120)
        expect(index).to_have_text("axial slice 8 / 12")
        page.keyboard.press("End")
        expect(index).to_have_text("axial slice 12 / 12")
        page.locator(".sw-slider").evaluate("s => { s.value = '2'; s.dispatchEvent(new Event('input')); }")
        expect(index).to_have_text("axial slice 3 / 12")
        _wait_painted(page, 2)

        box = page.locator(".sw-canvas").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.1)
        page.get_by_text("from the last click on the image").wait_for()
        readout = page.get_by_text(re.compile(r"HU at voxel x \d+, y \d+, z \d+"))
        value, x, y, z = map(int, re.search(r"(-?\d+) HU at voxel x (\d+), y (\d+), z (\d+)",
                                           readout.inner_text()).groups())
        assert z == 2 and 47 <= x <= 48 and 5 <= y <= 14  # ~1 px of rounding
        assert value == hu[z, y, x]
        page.screenshot(path=str(SHOTS / "viewer_axial.png"), full_page=True)

        page.get_by_test_id("stRadio").filter(has_text="Orientation").get_by_text("coronal").click()
        page.get_by_text(re.compile(r"coronal slice \d+ / 96")).wait_for()
        _wait_painted(page)
        page.screenshot(path=str(SHOTS / "viewer_coronal.png"), full_page=True)

        page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
        page.get_by_role("option", name=re.compile("zz_broken")).click()
        error = page.get_by_test_id("stAlertContentError")
        error.wait_for()
        assert "zz_broken.nii.gz" in error.inner_text()
        page.screenshot(path=str(SHOTS / "viewer_error.png"), full_page=True)

        page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
        page.get_by_role("option", name=re.compile("series_a")).click()
        _wait_painted(page)
        assert page.get_by_test_id("stAlertContentError").count() == 0


def test_viewer_shows_truth_overlays_of_demo_data(page, tmp_path):
    """Waits for what it checks, never for "the canvas changed": a stack change used to blank the
    canvas for a frame (fixed in the viewer). The layers are toggled in the viewer itself."""
    from core.demo import write_demo_data

    root = tmp_path / "data"
    write_demo_data(root / "demo", small=True, progress=lambda _m: None)
    with run_app(root, tmp_path) as url:
        _open_viewer(page, url)
        page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
        page.get_by_role("option", name=re.compile(r"chest_000")).click()
        expect(page.get_by_role("combobox", name="Volume")).to_have_value(re.compile(r"chest_000"))
        expect(page.locator(".sw-index")).to_have_text(re.compile(r"axial slice \d+ / \d+"))
        _wait_painted(page)
        assert page.evaluate(COUNT_COLOURS, [MASK_GREEN, BOX_YELLOW]) == [0, 0]  # no overlay yet

        _layer_toggle(page, "Lung mask (truth)").check()  # the viewer's own layer list: no rerun
        _wait_colours(page, [MASK_GREEN], at_least=50)
        _layer_toggle(page, "Lung boxes (truth)").check()
        green, yellow = _wait_colours(page, [MASK_GREEN, BOX_YELLOW], at_least=50)
        assert green >= 50 and yellow >= 50  # the lung mask's contour and the box outline, over the slice
        page.screenshot(path=str(SHOTS / "viewer_overlays.png"), full_page=True)
