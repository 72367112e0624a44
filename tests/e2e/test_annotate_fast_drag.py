"""Annotate page in Chromium: no drawn box is ever lost or saved on the wrong slice.

The page has one box canvas for all slices; each finished drag is sent at once with the slice it was
drawn on. Three ways a box used to be lost (streamlit-drawable-canvas, a canvas per slice, a debounced
send cancelled when the canvas went away): a drag the moment a new slice is on screen, a drag followed
by Next within 50 ms, a drag while "Propose for all slices" runs. Each test compares every CSV row
(Slice, Image, box, annotator) with what was dragged where; the slice a drag belongs to is the one the
canvas showed at pointer-down, recorded by a capture listener independent of the component.

One app for the module; each test works on a volume of its own (rows are told apart by Volume).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from core.annotations import BoxStore
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from tests.conftest import scratch
from tests.e2e.conftest import run_app

SHOTS = Path("/tmp/shots")
N_SMALL = 12
N_DRAWN = 5
CASES = {"a_next": ((N_SMALL, 128, 128), 5), "b_quick": ((N_SMALL, 128, 128), 6),
         "c_big": ((48, 512, 512), 7)}  # c_big: "Propose for all slices" takes about a second

# The component's root (inside its shadow root) and what it shows.
ROOT_JS = """() => {
  for (const host of document.querySelectorAll('[data-testid=stBidiComponentIsolated]')) {
    const r = host.shadowRoot && host.shadowRoot.querySelector('.bc-root');
    if (r) return r;
  }
  return null;
}"""
SHOWN_JS = f"""([volume, z]) => {{ const r = ({ROOT_JS})();
  return !!r && r.dataset.volume === volume && r.dataset.slice === String(z); }}"""
# Capture listeners: the slice on screen at each pointer-down on the canvas, when each drag ended, and
# when each click on "Next" happened.
RECORD_JS = f"""() => {{
  if (window.__rec) return;
  const root = {ROOT_JS};
  const on = (e, sel) => e.target && e.target.closest && e.target.closest(sel);
  const canvas = '[data-testid=stBidiComponentIsolated]';
  window.__rec = {{downs: [], ups: [], nexts: []}};
  document.addEventListener('pointerdown', (e) => {{ if (!on(e, canvas)) return; const r = root();
    window.__rec.downs.push({{volume: r && r.dataset.volume, slice: r && +r.dataset.slice}});
  }}, true);
  document.addEventListener('pointerup', (e) => {{
    if (on(e, canvas)) window.__rec.ups.push(performance.now()); }}, true);
  document.addEventListener('click', (e) => {{
    if (on(e, '.st-key-annotate_next')) window.__rec.nexts.push(performance.now()); }}, true);
}}"""
RUNNING_JS = "() => !!document.querySelector('[data-testid=stStatusWidget]')"


def _write(root: Path) -> dict[str, object]:
    volumes = {}
    for name, (shape, seed) in CASES.items():
        spacing = (5.0, 2.8 * 128 / shape[1], 2.8 * 128 / shape[2])
        ph = chest_ct_phantom(shape, spacing, seed=seed)
        write_dicom_series(np.round(ph.hu).astype(np.int16), root / "ct" / name, spacing=spacing)
        volumes[name] = load_volume(root / "ct" / name)
    return volumes


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with scratch(tmp_path_factory, "annotate_drag") as tmp:
        volumes = _write(tmp / "data")
        with run_app(tmp / "data", tmp) as url:
            yield url, BoxStore(tmp / "annotations" / "lung_bbox.csv"), volumes


def open_volume(page, url: str, name: str, volume) -> None:
    """The Annotate page on volume `name` (its middle slice on screen), recording pointer events."""
    page.goto(f"{url}/annotate?annotator=e2e")
    page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
    page.get_by_role("option", name=re.compile(re.escape(name))).click()
    wait_shown(page, volume.volume_id, volume.shape[0] // 2)
    page.evaluate(RECORD_JS)


def wait_shown(page, volume_id: str, z: int, timeout: float = 30_000) -> None:
    page.wait_for_function(SHOWN_JS, arg=[volume_id, z], polling="raf", timeout=timeout)


def stage(page):
    return page.get_by_test_id("bc-stage")


def drag_box(page, box: tuple[float, float, float, float], steps: int = 8) -> None:
    """Drag from (x0, y0) to (x1, y1), fractions of the image, in several moves as a hand does."""
    area = stage(page).bounding_box()
    x0, y0 = area["x"] + box[0] * area["width"], area["y"] + box[1] * area["height"]
    x1, y1 = area["x"] + box[2] * area["width"], area["y"] + box[3] * area["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
    page.mouse.up()


def centre(page, button_key: str) -> tuple[float, float]:
    area = page.locator(f".st-key-{button_key} button").first.bounding_box()
    return area["x"] + area["width"] / 2, area["y"] + area["height"] / 2


def box_for(k: int) -> tuple[float, float, float, float]:
    """A different box on each slice, so that a box saved on the wrong slice shows."""
    return 0.1 + 0.02 * k, 0.12 + 0.015 * k, 0.85 - 0.02 * k, 0.7 - 0.01 * k


def wait_rows(store: BoxStore, volume_id: str, predicate, timeout: float = 30.0) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    rows: dict[int, dict] = {}
    while time.monotonic() < deadline:
        rows = store.for_volume(volume_id) if store.path.exists() else {}
        if predicate(rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"the CSV never reached the expected state; rows of the volume: {rows}")


def check_rows(rows: dict[int, dict], volume, drawn: dict[int, tuple]) -> None:
    tol = 2.0 / 128 if volume.shape[1] == 128 else 2.0 / 512  # a CSS pixel of the canvas, and some
    for z, box in drawn.items():
        row = rows.get(z)
        assert row is not None, f"the box dragged on slice {z} is not in the CSV: {sorted(rows)}"
        assert row["Image"] == volume.slice_ids[z] and row["Annotator"] == "e2e"
        assert [row[c] for c in ("Xmin", "Ymin", "Xmax", "Ymax")] == pytest.approx(box, abs=tol), z


def shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


@pytest.mark.e2e
def test_box_dragged_right_after_next_lands_on_its_slice(app, page):
    url, store, volumes = app
    volume = volumes["a_next"]
    open_volume(page, url, "a_next", volume)
    first = volume.shape[0] // 2
    next_at = centre(page, "annotate_next")
    drawn = {}
    for k in range(N_DRAWN):
        z = first + k
        if k:
            page.mouse.click(*next_at)
            wait_shown(page, volume.volume_id, z)  # the new slice painted: drag at once, mid page run
        drag_box(page, box_for(k))
        drawn[z] = box_for(k)
    downs = page.evaluate("() => window.__rec.downs")
    assert [d["slice"] for d in downs[-N_DRAWN:]] == list(drawn)  # each drag began on the slice expected
    try:
        rows = wait_rows(store, volume.volume_id, lambda r: set(drawn) <= set(r))
    finally:
        shot(page, "annotate_after_next.png")
    assert set(rows) == set(drawn)
    check_rows(rows, volume, drawn)


@pytest.mark.e2e
def test_box_dragged_then_next_within_50_ms_is_saved_on_the_slice_it_was_drawn_on(app, page):
    url, store, volumes = app
    volume = volumes["b_quick"]
    open_volume(page, url, "b_quick", volume)
    first = volume.shape[0] // 2
    next_at = centre(page, "annotate_next")
    drawn = {}
    for k in range(N_DRAWN):
        z = first + k
        wait_shown(page, volume.volume_id, z)
        drag_box(page, box_for(k))
        page.mouse.click(*next_at)  # no wait: the drag's value and the click race
        drawn[z] = box_for(k)
    wait_shown(page, volume.volume_id, first + N_DRAWN)
    rec = page.evaluate("() => window.__rec")
    gaps = [click - up for up, click in zip(rec["ups"], rec["nexts"], strict=True)]
    # The race this test is about needs the click right behind the mouse-up. On a loaded machine the
    # harness itself sometimes takes longer between two input events: most must be under 50 ms.
    assert all(g >= 0 for g in gaps) and sum(g < 50 for g in gaps) >= 3 and max(gaps) < 500, \
        f"ms from the drag's end to the Next click: {gaps}"
    assert [d["slice"] for d in rec["downs"]] == list(drawn)
    try:
        rows = wait_rows(store, volume.volume_id, lambda r: set(drawn) <= set(r))
    finally:
        shot(page, "annotate_drag_then_next.png")
    assert set(rows) == set(drawn)
    check_rows(rows, volume, drawn)


@pytest.mark.e2e
def test_boxes_dragged_while_proposing_for_all_slices_are_kept_on_their_slices(app, page):
    url, store, volumes = app
    volume = volumes["c_big"]
    open_volume(page, url, "c_big", volume)
    first = volume.shape[0] // 2
    next_at = centre(page, "annotate_next")
    page.locator(".st-key-annotate_propose_all button").first.click()
    page.wait_for_function(RUNNING_JS, polling="raf")
    drawn, during = {}, []
    for k in range(3):
        z = first + k
        if k:
            page.mouse.click(*next_at)
            wait_shown(page, volume.volume_id, z)
        during.append(page.evaluate(RUNNING_JS))
        drag_box(page, box_for(k))
        drawn[z] = box_for(k)
    assert during[0], "the first drag did not happen while the proposals were being computed"
    try:
        rows = wait_rows(store, volume.volume_id,
                         lambda r: set(drawn) <= set(r) and all(r[z]["Annotator"] == "e2e" for z in drawn)
                         and len(r) > len(drawn))
    finally:
        shot(page, "annotate_drag_while_proposing.png")
    check_rows(rows, volume, drawn)
    others = {z: r["Annotator"] for z, r in rows.items() if z not in drawn}
    assert others and set(others.values()) == {"auto"}  # the proposals landed too, elsewhere
