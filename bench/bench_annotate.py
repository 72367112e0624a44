"""Seconds per slice on the Annotate page: pre-annotation accepted vs drawing each box by hand.

Starts the real app (tests/e2e/conftest.py's run_app) on a data root holding one demo-sized chest
CT series (256x256, 40 slices, written as DICOM with core.io.writers from core.phantoms, PatientID
DEMO-000), drives Debian's Chromium with Playwright and annotates N consecutive lung slices three
ways, each on a fresh annotation file:

- hand (baseline): drag the box on the canvas (10 mouse-move steps, corners at the true lung box),
  wait until the page shows it saved, press "Next ▶";
- propose + confirm: "Propose box", wait for the proposal, "Confirm & next ▶";
- propose all + confirm: "Propose for all slices" once (its time spread over the N slices), then
  "Confirm & next ▶" per slice.

A slice's time runs from the moment its canvas is on screen to the moment the next slice's canvas
is, so it is what the page costs (reruns, saving, canvas remounts); a person's looking and mouse
travel come on top, and are longer for drawing than for confirming. Also reports how close the
proposals are to the phantom's true boxes (IoU), i.e. whether accepting them unchanged is sound.

    .venv/bin/python -m bench.bench_annotate [--slices 20] [--start 6]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core.annotations import BoxStore
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, run_app

SHOTS = Path("/tmp/shots")
SHAPE, SPACING = (40, 256, 256), (2.5, 0.72, 0.72)
ANNOTATOR = "bench"


def _write_series(root: Path):
    """One chest CT series as the demo writes it; returns the phantom (true boxes per slice)."""
    from core.io.writers import write_dicom_series
    from core.phantoms import chest_ct_phantom

    ph = chest_ct_phantom(SHAPE, SPACING, seed=0)
    write_dicom_series(np.rint(ph.hu).astype(np.int16), root / "ct" / "chest_000", spacing=SPACING,
                       patient_id="DEMO-000", series_description="Synthetic chest CT",
                       window=(-600.0, 1500.0))
    return ph


# The slice is on screen once the component's background canvas has pixels at its centre.
PAINTED = """el => {
  const box = el.closest('.dc-container');
  const low = box && box.querySelector('canvas.dc-background-canvas');
  if (!el.isConnected || !low || !low.width) return false;
  const px = low.getContext('2d').getImageData(low.width >> 1, low.height >> 1, 1, 1).data;
  return px[3] > 0;
}"""


def _canvas(page):
    return page.get_by_test_id("stBidiComponentIsolated").locator("canvas.upper-canvas")


class Session:
    """One browser page on the Annotate page of a fresh app; `ready()` marks each slice on screen."""

    def __init__(self, page, n_slices: int, store: BoxStore, slice_ids: list[str]) -> None:
        self.page, self.n = page, n_slices
        self.store, self.slice_ids = store, slice_ids
        self.handle = None
        self.redrawn = 0

    def wait_slice(self, z: int) -> None:
        """Until slice z's progress text is up and a new canvas (not the previous one) is on screen."""
        self.page.get_by_text(f"Slice {z + 1} of {self.n} ·").wait_for()
        if self.handle is not None:
            self.page.wait_for_function("el => !el.isConnected", arg=self.handle, polling=20)
        self.handle = self.single_canvas()

    def single_canvas(self):
        """The canvas element once exactly one is on screen (a remount shows old and new briefly)."""
        canvas = _canvas(self.page)
        canvas.first.wait_for()
        deadline = time.monotonic() + 60
        while canvas.count() != 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{canvas.count()} canvases on screen for 60 s")
            time.sleep(0.01)
        handle = canvas.element_handle()
        self.page.wait_for_function(PAINTED, arg=handle, polling=20)
        return handle

    def go_to(self, z: int) -> None:
        field = self.page.get_by_label("Slice", exact=True)
        field.fill(str(z))
        field.press("Enter")
        self.wait_slice(z)

    def drag(self, box: tuple[float, float, float, float], steps: int = 10) -> None:
        area = _canvas(self.page).bounding_box()
        x0, y0 = area["x"] + box[0] * area["width"], area["y"] + box[1] * area["height"]
        x1, y1 = area["x"] + box[2] * area["width"], area["y"] + box[3] * area["height"]
        mouse = self.page.mouse
        mouse.move(x0, y0)
        mouse.down()
        for i in range(1, steps + 1):
            mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
        mouse.up()

    def click(self, name: str) -> None:
        """Press a button; the canvas on screen now is the one `wait_slice` waits to see replaced."""
        self.handle = self.single_canvas()
        # a button's accessible name ends with its keyboard shortcut hint ("Next ▶ →")
        self.page.get_by_role("button", name=re.compile("^" + re.escape(name))).click()


def _hand(s: Session, z: int, truth) -> None:
    saved = s.page.get_by_text(f"· by {ANNOTATOR} ·")
    for _ in range(3):  # a drag the canvas did not take is drawn again, as a person would
        s.drag(tuple(float(v) for v in truth.boxes[z]))
        try:
            saved.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            if s.store.get(s.slice_ids[z]) is not None:  # saved, only slow to show
                saved.wait_for()
                break
            s.redrawn += 1
    s.click("Next ▶")


def _propose_confirm(s: Session, z: int, truth) -> None:
    s.click("Propose box")
    s.page.get_by_text("· by auto ·").wait_for()
    s.click("Confirm & next ▶")


def _confirm(s: Session, z: int, truth) -> None:
    s.page.get_by_text("· by auto ·").wait_for()
    s.click("Confirm & next ▶")


def _propose_all(s: Session) -> float:
    t0 = time.perf_counter()
    s.click("Propose for all slices")
    s.page.get_by_text("· by auto ·").wait_for(timeout=120_000)
    s.page.get_by_text("Proposed box (orange)").wait_for()
    return time.perf_counter() - t0


def _run_mode(browser, mode: str, step, truth, tmp: Path, start: int, count: int) -> dict:
    root, work = tmp / mode / "data", tmp / mode
    root.mkdir(parents=True)
    _write_series(root)
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    upfront = 0.0
    try:
        with run_app(root, work) as url:
            page.goto(f"{url}/annotate?annotator={ANNOTATOR}")
            store = BoxStore(work / "annotations" / "lung_bbox.csv")
            s = Session(page, SHAPE[0], store, _volume(root).slice_ids)
            s.wait_slice(SHAPE[0] // 2)
            s.go_to(start)
            if mode == "propose all + confirm":
                upfront = _propose_all(s)
                s.wait_slice(start)
            times, last = [], time.perf_counter()
            for z in range(start, start + count):
                try:
                    step(s, z, truth)
                    s.wait_slice(z + 1)
                except Exception:
                    SHOTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(SHOTS / "bench_annotate_failed.png"), full_page=True)
                    print(f"{mode}: failed on slice {z} after {len(times)} slice(s)", flush=True)
                    raise
                now = time.perf_counter()
                times.append(now - last)
                last = now
            s.page.wait_for_timeout(300)
            SHOTS.mkdir(exist_ok=True)
            shot = "bench_annotate_" + mode.replace(" + ", "_and_").replace(" ", "_") + ".png"
            page.screenshot(path=str(SHOTS / shot), full_page=True)
            rows = store.for_volume(_volume(root).volume_id)
    finally:
        context.close()
    saved = sum(1 for z in range(start, start + count) if rows.get(z, {}).get("Annotator") == ANNOTATOR)
    return {"mode": mode, "times": times, "upfront": upfront, "saved": saved, "redrawn": s.redrawn}


def _volume(root: Path):
    from core.io import load_volume

    return load_volume(root / "ct" / "chest_000")


def _proposal_quality(truth, start: int, count: int) -> list[float]:
    from core.propose import box_iou, propose_volume

    proposed = propose_volume(np.rint(truth.hu).astype(np.float32))
    return [box_iou(proposed.get(z), tuple(map(float, truth.boxes[z]))) for z in range(start, start + count)]


def _table(results: list[dict], count: int, quality: list[float]) -> None:
    base = statistics.fmean(results[0]["times"])
    print(f"\nAnnotate page, {count} consecutive slices of a {SHAPE[1]}x{SHAPE[2]}x{SHAPE[0]} chest CT "
          f"(512 px canvas), Chromium headless, 2-core machine")
    print(f"{'workflow':<24}{'p50 s/slice':>12}{'mean s/slice':>14}{'max':>8}{'saved':>8}{'vs hand':>10}")
    for r in results:
        per_slice = [t + r["upfront"] / count for t in r["times"]]
        mean = statistics.fmean(per_slice)
        print(f"{r['mode']:<24}{statistics.median(per_slice):>12.2f}{mean:>14.2f}{max(per_slice):>8.2f}"
              f"{r['saved']:>5}/{count:<3}{base / mean:>9.2f}x")
    for r in results:
        if r["redrawn"]:
            print(f"('{r['mode']}': {r['redrawn']} drag(s) not taken by the canvas, drawn again, included)")
        if r["upfront"]:
            print(f"('{r['mode']}' includes {r['upfront']:.2f} s for proposing all {SHAPE[0]} slices, "
                  f"spread over the {count})")
    print(f"proposal vs true lung box on these slices: IoU mean {statistics.fmean(quality):.3f}, "
          f"min {min(quality):.3f}")
    print("Times are what the page costs (rerun, save, canvas remount); a person's reading and mouse travel "
          "come on top,\nand drawing a box by hand takes a person several seconds more than one click.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--start", type=int, default=6, help="first slice (lungs are on 4..36)")
    args = parser.parse_args(argv)
    count = max(1, min(args.slices, SHAPE[0] - 1 - args.start))
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as folder, sync_playwright() as pw:
        tmp = Path(folder)
        truth = _write_series(tmp / "truth")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        modes = [("hand (baseline)", _hand), ("propose + confirm", _propose_confirm),
                 ("propose all + confirm", _confirm)]
        results = [_run_mode(browser, name, step, truth, tmp, args.start, count) for name, step in modes]
        browser.close()
    _table(results, count, _proposal_quality(truth, args.start, count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
