"""The Viewer composites in the browser: window/level by right-drag with no rerun while dragging and no
re-sent slices, mask and heatmap layers toggled and faded exactly where they are, and a hover readout
that equals the voxel value, in axial and in a resliced orientation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.io import load_volume
from core.io.writers import write_dicom_series
from core.predictions import Prediction, save_prediction
from tests.e2e.conftest import run_app

pytestmark = pytest.mark.e2e

Z, Y, X = 16, 112, 128
MASK_ROWS, MASK_COLS = slice(20, 44), slice(16, 60)
HEAT_CENTRE = (80, 92)
VIEWER_ROOT = ("[...document.querySelectorAll('*')].map(e => e.shadowRoot).filter(Boolean)"
               ".map(r => r.querySelector('.sw-root')).find(Boolean)")
PIXELS = f"""() => {{
  const c = ({VIEWER_ROOT}).querySelector('.sw-canvas');
  return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
}}"""
DATASET = f"(name) => ({VIEWER_ROOT}).dataset[name] ?? null"


def _series(root: Path) -> np.ndarray:
    """A noisy CT whose every voxel differs (so a re-sent stack would be many kilobytes)."""
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[:Z, :Y, :X]
    hu = (-900 + 40 * z + 3 * y + 2 * x + rng.integers(-60, 60, (Z, Y, X))).astype(np.int16)
    write_dicom_series(hu, root / "ct" / "series_a", spacing=(2.5, 0.8, 0.8))
    return hu


def _prediction(root: Path, runs: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    volume = load_volume(root / "ct" / "series_a")
    mask = np.zeros(volume.shape, np.uint8)
    mask[:, MASK_ROWS, MASK_COLS] = 1
    y, x = np.mgrid[:Y, :X]
    blob = np.exp(-(((y - HEAT_CENTRE[0]) / 10.0) ** 2 + ((x - HEAT_CENTRE[1]) / 14.0) ** 2))
    heat = np.where(blob > 0.1, blob, 0).astype(np.float32)
    heatmap = np.repeat(heat[np.newaxis], volume.shape[0], axis=0)
    checkpoint = tmp / "dummy.ckpt"
    checkpoint.write_bytes(b"not a real checkpoint: the store keys on the file")
    save_prediction(volume, Prediction(family="lung_localizer", mask=mask, heatmap=heatmap), checkpoint,
                    runs_root=runs)
    return mask[0] > 0, heat > 0.05


class _Socket:
    """Websocket frames: messages the page sends (a rerun is one) and bytes it receives."""

    def __init__(self, page) -> None:
        self.sent, self.received = 0, 0
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        ws.on("framesent", self._sent)
        ws.on("framereceived", self._received)

    def _sent(self, _payload) -> None:
        self.sent += 1

    def _received(self, payload) -> None:
        self.received += len(payload)


def _open(page, url: str) -> None:
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
    page.locator(".sw-root[data-painted]").wait_for()
    page.locator(".sw-root:not([data-pending])[data-painted]").wait_for()  # every slice decoded


def _pixels(page) -> np.ndarray:
    size = page.locator(".sw-canvas").evaluate("c => [c.height, c.width]")
    return np.asarray(page.evaluate(PIXELS), np.int16).reshape(size[0], size[1], 4)[..., :3]


def _repaint(page, action) -> np.ndarray:
    """Do `action`, wait for the next paint, return the canvas pixels."""
    before = int(page.evaluate(DATASET, "paints") or 0)
    action()
    page.wait_for_function(f"(n) => Number(({VIEWER_ROOT}).dataset.paints) > n", arg=before)
    return _pixels(page)


def _layer(page, prefix: str):
    return page.locator(".sw-layer").filter(has_text=prefix)


def _set_opacity(page, prefix: str, value: float) -> None:
    _layer(page, prefix).locator(".sw-opacity").evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input')); }", value)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=-1)


def test_right_drag_windows_in_the_browser_without_a_rerun_or_resent_slices(page, tmp_path):
    root = tmp_path / "data"
    _series(root)
    with run_app(root, tmp_path) as url:
        socket = _Socket(page)
        _open(page, url)
        page.wait_for_timeout(800)  # the opening reports have come and gone
        wl = page.locator(".sw-wl")
        assert wl.inner_text() == "C -600 W 1500"
        canvas = page.locator(".sw-canvas")
        box = canvas.bounding_box()
        before = _pixels(page)
        sent, received = socket.sent, socket.received
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down(button="right")
        for i in range(1, 9):  # right and up: a wider window, a lower level
            page.mouse.move(box["x"] + box["width"] / 2 + 10 * i, box["y"] + box["height"] / 2 - 6 * i)
        page.wait_for_function(f"() => ({VIEWER_ROOT}).querySelector('.sw-wl').textContent"
                               " !== 'C -600 W 1500'")
        page.wait_for_timeout(300)
        during = _pixels(page)
        assert socket.sent == sent  # nothing went to the server while dragging: no rerun
        assert _changed(before, during).mean() > 0.5  # the picture is windowed anew
        center, width = (float(v) for v in wl.inner_text().split()[1::2])
        assert center < -600 and width > 1500
        page.mouse.up(button="right")
        caption = page.get_by_text(f"Window: center {center:.0f} HU, width {width:.0f}")
        caption.wait_for()  # reported back once, after the drag: the montage follows
        page.wait_for_timeout(500)
        assert socket.received - received < 30_000  # a page delta, not the slices (~300 KB) again
        assert page.evaluate(DATASET, "pending") is None

        page.locator(".sw-preset").select_option("bone")  # a preset, also in the browser
        expect_text = "C 400 W 1800"
        page.wait_for_function(f"(t) => ({VIEWER_ROOT}).querySelector('.sw-wl').textContent === t",
                               arg=expect_text)


def test_mask_and_heatmap_layers_toggle_and_fade_where_they_are_and_nowhere_else(page, tmp_path):
    root = tmp_path / "data"
    _series(root)
    inside_mask, inside_heat = _prediction(root, tmp_path / "runs", tmp_path)
    with run_app(root, tmp_path) as url:
        _open(page, url)
        page.locator(".sw-layer").first.wait_for()
        page.wait_for_function(f"() => ({VIEWER_ROOT}).querySelectorAll('.sw-layer').length === 2")
        plain = _pixels(page)
        assert plain.shape[:2] == (Y, X)

        mask_on = _repaint(page, lambda: _layer(page, "Predicted mask").locator(".sw-on").check())
        changed = _changed(plain, mask_on)
        assert changed[inside_mask].all() and not changed[~inside_mask].any()

        faded = _repaint(page, lambda: _set_opacity(page, "Predicted mask", 0.1))
        changed = _changed(mask_on, faded)
        assert changed.any() and not changed[~inside_mask].any()

        heat_on = _repaint(page, lambda: _layer(page, "Heatmap").locator(".sw-on").check())
        changed = _changed(faded, heat_on)
        assert changed[inside_heat].mean() > 0.9 and not changed[~inside_heat].any()

        heat_faded = _repaint(page, lambda: _set_opacity(page, "Heatmap", 0.9))
        changed = _changed(heat_on, heat_faded)
        assert changed.any() and not changed[~inside_heat].any()

        hot = _repaint(page, lambda: _layer(page, "Heatmap").locator(".sw-cmap").select_option("hot"))
        assert not _changed(heat_faded, hot)[~inside_heat].any()

        off = _repaint(page, lambda: _layer(page, "Predicted mask").locator(".sw-on").uncheck())
        off = _repaint(page, lambda: _layer(page, "Heatmap").locator(".sw-on").uncheck())
        np.testing.assert_array_equal(off, plain)  # both off: the plain slice again


def _hover_readout(page, fx: float, fy: float) -> dict:
    box = page.locator(".sw-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    page.wait_for_function(f"() => ({VIEWER_ROOT}).dataset.readout")
    page.mouse.move(box["x"] + box["width"] * fx + 0.5, box["y"] + box["height"] * fy)
    return json.loads(page.evaluate(DATASET, "readout"))


def test_hover_readout_equals_the_voxel_value_axial_and_resliced(page, tmp_path):
    root = tmp_path / "data"
    hu = _series(root)
    with run_app(root, tmp_path) as url:
        _open(page, url)
        for fx, fy in ((0.3, 0.6), (0.8, 0.15)):
            r = _hover_readout(page, fx, fy)
            assert r["z"] == Z // 2 and r["value"] == hu[r["z"], r["y"], r["x"]]
            assert abs(r["x"] - fx * X) <= 1.5 and abs(r["y"] - fy * Y) <= 1.5
        text = page.locator(".sw-pointer").inner_text()
        assert text.endswith(f"{hu[r['z'], r['y'], r['x']]} HU")

        page.get_by_test_id("stRadio").filter(has_text="Orientation").get_by_text("sagittal").click()
        page.get_by_text(f"sagittal slice {X // 2 + 1} / {X}").wait_for()
        page.locator(".sw-root[data-painted]").wait_for()
        for fx, fy in ((0.25, 0.2), (0.7, 0.9)):
            r = _hover_readout(page, fx, fy)
            assert r["x"] == X // 2 and r["value"] == hu[r["z"], r["y"], r["x"]]
            assert abs(r["z"] - (Z - 1 - fy * Z)) <= 1.5  # superior (the last z) at the top
