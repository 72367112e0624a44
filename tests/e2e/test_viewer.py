"""The Viewer in the real app and Chromium: pick a series, step slices, read HU, see a bad file's error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from core.io.writers import write_dicom_series
from tests.e2e.conftest import run_app

pytestmark = pytest.mark.e2e
SHOTS = Path("/tmp/shots")


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


def _open_viewer(page, url: str) -> None:
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
    page.locator(".sw-root[data-painted]").wait_for()


def _canvas_pixels(page) -> str:
    return page.locator(".sw-canvas").evaluate("c => c.toDataURL()")


def _index_text(page) -> str:
    return page.locator(".sw-index").inner_text()


def test_viewer_steps_slices_reads_hu_and_survives_a_bad_file(page, tmp_path):
    root = tmp_path / "data"
    hu = _series(root)
    (root / "zz_broken.nii.gz").write_bytes(b"this is not a NIfTI file")
    SHOTS.mkdir(exist_ok=True)
    with run_app(root, tmp_path) as url:
        _open_viewer(page, url)
        assert _index_text(page) == "axial slice 7 / 12"
        first = _canvas_pixels(page)

        page.locator(".sw-canvas").hover()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        assert _index_text(page) == "axial slice 9 / 12"
        page.locator(".sw-root[data-painted='8']").wait_for()
        assert _canvas_pixels(page) != first  # a different slice is painted

        page.mouse.wheel(0, -120)
        assert _index_text(page) == "axial slice 8 / 12"
        page.keyboard.press("End")
        assert _index_text(page) == "axial slice 12 / 12"
        page.locator(".sw-slider").evaluate("s => { s.value = '2'; s.dispatchEvent(new Event('input')); }")
        assert _index_text(page) == "axial slice 3 / 12"

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
        page.locator(".sw-root[data-painted]").wait_for()
        page.screenshot(path=str(SHOTS / "viewer_coronal.png"), full_page=True)

        page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
        page.get_by_role("option", name=re.compile("zz_broken")).click()
        error = page.get_by_test_id("stAlertContentError")
        error.wait_for()
        assert "zz_broken.nii.gz" in error.inner_text()
        page.screenshot(path=str(SHOTS / "viewer_error.png"), full_page=True)

        page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
        page.get_by_role("option", name=re.compile("series_a")).click()
        page.locator(".sw-root[data-painted]").wait_for()
        assert page.get_by_test_id("stAlertContentError").count() == 0


def test_viewer_shows_truth_overlays_of_demo_data(page, tmp_path):
    from core.demo import write_demo_data

    root = tmp_path / "data"
    write_demo_data(root / "demo", small=True, progress=lambda _m: None)
    with run_app(root, tmp_path) as url:
        _open_viewer(page, url)
        page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
        page.get_by_role("option", name=re.compile(r"chest_000")).click()
        page.get_by_text(re.compile(r"axial slice \d+ / \d+")).wait_for()
        plain = _canvas_pixels(page)
        page.get_by_test_id("stCheckbox").filter(has_text="Lung mask (truth)").click()
        page.get_by_test_id("stCheckbox").filter(has_text="Lung boxes (truth)").click()
        page.wait_for_function(
            "(before) => { const c = [...document.querySelectorAll('*')].map(e => e.shadowRoot)"
            ".filter(Boolean).map(r => r.querySelector('.sw-canvas')).find(Boolean);"
            " return c && c.toDataURL() !== before; }", arg=plain)
        colours = page.locator(".sw-canvas").evaluate(
            "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let colour = 0; for (let i = 0; i < d.length; i += 4)"
            " if (Math.abs(d[i] - d[i + 1]) > 40 || Math.abs(d[i + 1] - d[i + 2]) > 40) colour++;"
            " return colour; }")
        assert colours > 50  # green lung mask and yellow box pixels over the grey slice
        page.screenshot(path=str(SHOTS / "viewer_overlays.png"), full_page=True)
