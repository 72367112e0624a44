"""The X-ray gallery in the real app: Predict & review lists the run's test images with heatmaps, "Open"
shows one large, "Open in the Viewer" lands on it, and the Viewer paints its stored heatmap layer.
Screenshots go to /tmp/shots/."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.models.xray_classifier.synthetic import write_xray_folder
from tests.e2e.conftest import run_app
from tests.test_xray_review import _checkpoint

SHOTS = Path("/tmp/shots")


def _coloured_viewer(page) -> int:
    return page.locator(".sw-canvas").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 0; i < d.length; i += 4)"
        " if (Math.abs(d[i] - d[i + 1]) > 40 || Math.abs(d[i + 1] - d[i + 2]) > 40) n++; return n; }")


@pytest.mark.e2e
def test_gallery_open_and_viewer_heatmap(page, tmp_path):
    data = tmp_path / "data"
    write_xray_folder(data / "xray", 0, (("train", 1), ("test", 2)), 64, progress=lambda _m: None)
    _checkpoint(tmp_path / "runs" / "run1", data / "xray")
    SHOTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1800})
    with run_app(data, tmp_path) as url:
        page.goto(url)
        page.get_by_test_id("stSidebarNavLink").filter(has_text="Predict & review").click()
        opens = page.get_by_role("button", name="Show large", exact=True)
        opens.first.wait_for(timeout=120_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(SHOTS / "xray_gallery.png"), full_page=True)
        assert opens.count() == 4  # one per test image
        page.get_by_test_id("stImage").first.wait_for()
        opens.first.click()
        page.get_by_role("button", name="Open in the Viewer").wait_for(timeout=60_000)
        page.get_by_role("button", name="Download the figure (PNG)").wait_for()
        page.screenshot(path=str(SHOTS / "xray_gallery_open.png"), full_page=True)
        page.get_by_role("button", name="Open in the Viewer").click()
        page.locator(".sw-root[data-painted]").wait_for(timeout=60_000)
        assert _coloured_viewer(page) == 0
        page.locator(".sw-layer").filter(has_text="Heatmap — ").first.locator(".sw-on").check()  # its toggle
        page.wait_for_function(
            "() => { const c = [...document.querySelectorAll('*')].map(e => e.shadowRoot)"
            ".filter(Boolean).map(r => r.querySelector('.sw-canvas')).find(Boolean);"
            " if (!c) return false; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[i + 2]) > 40) return true;"
            " return false; }", timeout=60_000)
        assert _coloured_viewer(page) > 100  # heatmap pixels over the X-ray
        page.screenshot(path=str(SHOTS / "xray_viewer_heatmap.png"), full_page=True)
