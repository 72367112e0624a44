"""The Viewer at common laptop sizes: the slice and its slider on screen without scrolling, reading
windows only in the window list, and the hover readout cleared when another volume opens."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from core.io.writers import write_dicom_series
from tests.e2e.conftest import run_app
from tests.e2e.test_viewer import PAINTED, VIEWER_ROOT

pytestmark = pytest.mark.e2e
SHOTS = Path("/tmp/shots")
SIZES = ((1600, 1000), (1366, 768))

# Rectangles of the viewer's parts, in viewport pixels, as the page is first shown (not scrolled).
BOXES = f"""() => {{
  const r = {VIEWER_ROOT};
  const box = (sel) => {{ const b = r.querySelector(sel).getBoundingClientRect();
    return {{top: b.top, bottom: b.bottom, left: b.left, right: b.right, height: b.height}}; }};
  return {{canvas: box('.sw-canvas'), slider: box('.sw-slider'), view: [innerWidth, innerHeight]}};
}}"""
READOUT = f"() => {{ const r = {VIEWER_ROOT}; return [r.dataset.readout || null, "\
          f"r.querySelector('.sw-pointer').textContent, r.dataset.stack]; }}"


def _data(root: Path) -> None:
    """A 512 x 512 chest-like CT (the size of a real slice) and a second, smaller series."""
    z, y, x = np.mgrid[:16, :512, :512]
    hu = np.full(z.shape, -1000, np.int16)
    hu[((y - 256) / 200.0) ** 2 + ((x - 256) / 230.0) ** 2 < 1] = 40
    write_dicom_series(hu, root / "ct" / "a_chest", spacing=(2.5, 0.7, 0.7))
    write_dicom_series(np.full((6, 64, 64), 500, np.int16), root / "ct" / "b_small", spacing=(2.0, 1.0, 1.0))


def _open(page, url: str) -> None:
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
    page.wait_for_function(PAINTED, arg=None)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_slice_and_its_slider_fit_the_window(browser, tmp_path, size):
    root = tmp_path / "data"
    _data(root)
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        with run_app(root, tmp_path) as url:
            _open(page, url)
            page.wait_for_timeout(300)  # the layout settles (fonts, the side column)
            boxes = page.evaluate(BOXES)
            SHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SHOTS / f"viewer_{size[0]}x{size[1]}.png"))
            canvas, slider = boxes["canvas"], boxes["slider"]
            assert canvas["top"] >= 0 and slider["bottom"] <= size[1], boxes
            assert canvas["bottom"] <= slider["top"] + 1, boxes  # the slider under the slice, both on screen
            assert canvas["height"] >= (420 if size[1] >= 1000 else 330), boxes  # and the slice not tiny
            # the browser's window list: reading windows only, no model's input window
            presets = page.locator(".sw-preset option").all_inner_texts()
            assert presets == ["custom", "lung", "mediastinum", "bone", "brain"]
    finally:
        context.close()


def test_the_hover_readout_is_cleared_when_another_volume_opens(page, tmp_path):
    root = tmp_path / "data"
    _data(root)
    with run_app(root, tmp_path) as url:
        _open(page, url)
        box = page.locator(".sw-canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.wait_for_function(f"() => !!({VIEWER_ROOT}).dataset.readout")
        before, text, stack = page.evaluate(READOUT)
        assert json.loads(before)["value"] == 40 and text.endswith("40 HU")
        # another volume, picked with the keyboard: the pointer stays where it was over the canvas
        select = page.get_by_test_id("stSelectbox").filter(has_text="Volume").locator("input")
        select.focus()
        page.keyboard.type("b_small")
        page.keyboard.press("Enter")
        page.wait_for_function(f"(old) => ({VIEWER_ROOT}).dataset.stack !== old", arg=stack)
        page.wait_for_function(PAINTED, arg=None)
        after, text, _ = page.evaluate(READOUT)
        assert after is None and text == ""  # no x / y / value of the last volume
        expect(page.locator(".sw-index")).to_have_text(re.compile(r"axial slice \d+ / 6"))
        # the readout comes back with the pointer, for the new volume
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.wait_for_function(f"() => !!({VIEWER_ROOT}).dataset.readout")
        assert json.loads(page.evaluate(READOUT)[0])["value"] == 500
