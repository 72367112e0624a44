"""Annotate page in Chromium: keyboard only once the image has focus, and the image on screen whole.

One app for the module: a 12-slice CT for the keys and a 512x512 CT for the layout.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.annotations import BoxStore
from core.io import load_volume
from core.io.writers import write_dicom_series
from core.phantoms import chest_ct_phantom
from tests.conftest import scratch
from tests.e2e.conftest import run_app
from tests.e2e.test_annotate_fast_drag import ROOT_JS, open_volume, shot, stage, wait_rows, wait_shown

KIND_JS = f"() => {{ const r = ({ROOT_JS})(); const b = r && r.querySelector('.bc-box');" \
          " return b && !b.hidden ? b.dataset.kind : null; }"
FOCUS_JS = "() => (document.activeElement || {}).dataset?.testid === 'stBidiComponentIsolated'"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with scratch(tmp_path_factory, "annotate_keys") as tmp:
        root = tmp / "data"
        for name, shape, spacing in (("k_keys", (12, 128, 128), (5.0, 2.8, 2.8)),
                                     ("l_512", (6, 512, 512), (5.0, 0.7, 0.7))):
            ph = chest_ct_phantom(shape, spacing, seed=11)
            write_dicom_series(np.round(ph.hu).astype(np.int16), root / "ct" / name, spacing=spacing)
        volumes = {name: load_volume(root / "ct" / name) for name in ("k_keys", "l_512")}
        with run_app(root, tmp) as url:
            yield url, BoxStore(tmp / "annotations" / "lung_bbox.csv"), volumes


@pytest.mark.e2e
def test_every_shortcut_works_after_clicking_on_the_image(app, page):
    url, store, volumes = app
    volume = volumes["k_keys"]
    vid, z = volume.volume_id, volume.shape[0] // 2
    open_volume(page, url, "k_keys", volume)
    area = stage(page).bounding_box()
    page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)  # a click draws nothing
    assert page.evaluate(FOCUS_JS)
    keys = page.keyboard

    keys.press("ArrowRight")
    wait_shown(page, vid, z + 1)
    keys.press("p")
    rows = wait_rows(store, vid, lambda r: r.get(z + 1, {}).get("Annotator") == "auto")
    assert set(rows) == {z + 1}
    page.wait_for_function(f"() => ({KIND_JS})() === 'rule'", polling="raf")  # drawn orange
    keys.press("Enter")  # confirm & next
    wait_shown(page, vid, z + 2)
    wait_rows(store, vid, lambda r: r.get(z + 1, {}).get("Annotator") == "e2e")
    keys.press("ArrowLeft")
    wait_shown(page, vid, z + 1)
    page.wait_for_function(f"() => ({KIND_JS})() === 'person'", polling="raf")

    def press(key: str, action: str) -> None:
        """Press a key once the page shows its button enabled (as a reader sees it)."""
        page.locator(f".st-key-annotate_{action} button:not([disabled])").first.wait_for()
        keys.press(key)

    press("Delete", "delete")
    wait_rows(store, vid, lambda r: z + 1 not in r)
    press("u", "undo")
    wait_rows(store, vid, lambda r: z + 1 in r)
    press("Shift+U", "redo")  # deleted again
    wait_rows(store, vid, lambda r: z + 1 not in r)
    press("Control+z", "undo")
    wait_rows(store, vid, lambda r: z + 1 in r)
    press("Control+y", "redo")
    wait_rows(store, vid, lambda r: z + 1 not in r)
    press("Control+z", "undo")
    wait_rows(store, vid, lambda r: z + 1 in r)
    page.wait_for_function(f"() => ({KIND_JS})() === 'person'", polling="raf")
    press("Backspace", "delete")
    wait_rows(store, vid, lambda r: z + 1 not in r)
    page.wait_for_function(f"() => ({KIND_JS})() === null", polling="raf")

    keys.press("n")  # next slice without a box: z + 2 (z + 1 has none now, but "next" starts after it)
    wait_shown(page, vid, z + 2)
    keys.press("2")
    page.locator(".st-key-annotate_window_mediastinum [data-testid=stBaseButton-primary]").first.wait_for()
    keys.press("1")
    page.locator(".st-key-annotate_window_lung [data-testid=stBaseButton-primary]").first.wait_for()
    page.mouse.move(area["x"] + 20, area["y"] + 20)
    page.mouse.wheel(0, 120)  # the wheel steps slices too
    wait_shown(page, vid, z + 3)
    assert page.evaluate(FOCUS_JS), "the image lost the keyboard focus"
    shot(page, "annotate_keys.png")
    assert set(store.for_volume(vid)) == set()  # nothing stray was drawn by the clicks and keys

    page.get_by_role("button", name="Keys").click()
    help_text = page.get_by_test_id("stPopoverBody").inner_text()
    for words in ("Ctrl+Z", "Shift+U", "Enter", "lung window", "previous / next slice"):
        assert words in help_text


@pytest.mark.e2e
@pytest.mark.parametrize("size", [(1600, 1000), (1366, 768)])
def test_a_512_slice_is_whole_on_screen_and_large(app, browser, size):
    url, _, volumes = app
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        open_volume(page, url, "l_512", volumes["l_512"])
        page.wait_for_timeout(300)  # let the page finish its run: nothing may push the image down
        box = stage(page).bounding_box()
        scrolled = page.evaluate("() => [document.scrollingElement.scrollTop, "
                                 "(document.querySelector('[data-testid=stMain]') || {}).scrollTop || 0]")
        shot(page, f"annotate_layout_{width}x{height}.png")
    finally:
        context.close()
    assert scrolled == [0, 0]
    assert box["x"] >= 0 and box["y"] >= 0, box
    assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (box, size)
    assert abs(box["width"] - box["height"]) <= 1  # the slice's aspect ratio
    assert box["height"] >= 0.85 * (height - 80), f"the image could be larger: {box} at {size}"
