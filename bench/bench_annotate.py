"""Annotate page in the real browser: lost boxes in fast drags with Next, and the page's cost per slice.

Starts the real app (tests/e2e/conftest.py's run_app) on a data root of chest CT series written as
DICOM from core.phantoms, drives Debian's Chromium with Playwright, and measures two things:

1. Lost boxes: `--drags` (200) consecutive slices of a small CT (64x64 slices, so the page is quick
   and the race is tight); on each, as soon as the slice is on screen, drag a box (8 mouse moves) and
   click "Next ▶" at once (a few ms after the mouse-up). Then every slice's CSV row is compared with
   the box dragged there: drawn / saved on its own slice / misplaced / lost. Target: 0 lost.
   With `--old-ref REF` (a git ref, e.g. the commit before the new canvas) the same is run on that
   version of the app, exported with `git archive`, as the baseline. Pages before the new canvas need
   `streamlit-drawable-canvas` (no longer a dependency):
   `.venv/bin/pip install streamlit-drawable-canvas==0.13.0`.

2. Page cost per slice on `--slices` consecutive lung slices of a 256x256x40 CT, each workflow on a
   volume of its own, with the keyboard only and, as the baseline, with mouse clicks on the buttons:
   - hand: drag the box, then Right (keys) / click "Next ▶" (mouse);
   - rule proposal + confirm: P / "Propose box", wait for the orange box, Enter / "Confirm & next ▶";
   - propose all + confirm: "Propose for all slices" once (its time spread over the slices), then
     Enter / "Confirm & next ▶" on each;
   - model proposal + confirm, model propose all + confirm: the same with a trained lung localizer
     chosen in "Proposals from" (its boxes cyan, annotator `model:<run>`). The run is trained in the
     bench before the app starts (core.annotation_loop.start_training, the quick preset with
     `--model-epochs` (3) epochs, on the rule boxes of `--model-boxes` (12) lung slices of another
     phantom, confirmed under another name); its time is printed, not counted per slice. So is the
     server's first model proposal (it loads the checkpoint), made on a volume of its own before the
     timed runs, so that neither mode pays it.
   A slice's time runs from the moment it is painted on the canvas to the moment the next one is
   (timestamps taken in the page), so it is what the page costs: reruns, saving, sending the image,
   plus the scripted drag or the pointer's trip to the button. A person's looking comes on top.
   Target: <= 0.5 s per confirmed slice with keys.

    .venv/bin/python -m bench.bench_annotate [--drags 200] [--slices 15] [--old-ref REF] [--skip-lost]
                                             [--skip-model] [--model-boxes 12] [--model-epochs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.annotations import BoxStore
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, REPO, run_app
from tests.e2e.test_annotate_fast_drag import ROOT_JS, SHOWN_JS

SHOTS = Path("/tmp/shots")
PACE_SHAPE, PACE_SPACING = (40, 256, 256), (2.5, 0.72, 0.72)
ANNOTATOR = "bench"
KIND_JS = f"() => {{ const r = ({ROOT_JS})(); const b = r && r.querySelector('.bc-box');" \
          " return b && !b.hidden ? b.dataset.kind : null; }"
# In-page timestamps of each slice painted on the canvas (the component sets data-slice when it is).
TIMES_JS = f"""() => {{
  if (window.__painted) return;
  window.__painted = [];
  const root = ({ROOT_JS})();
  window.__events = [];  // ['in', ms]: a key or click; ['out', ms]: the page answered (slice or box changed)
  const mark = (kind) => window.__events.push([kind, performance.now()]);
  const note = () => {{
    window.__painted.push([root.dataset.volume, +root.dataset.slice, performance.now()]);
    mark('out');
  }};
  new MutationObserver(note).observe(root, {{attributes: true,
                                              attributeFilter: ['data-slice', 'data-volume']}});
  const box = root.querySelector('.bc-box');
  new MutationObserver(() => mark('out')).observe(box, {{attributes: true,
                                                         attributeFilter: ['data-kind', 'hidden']}});
  document.addEventListener('keydown', () => mark('in'), true);
  document.addEventListener('click', () => mark('in'), true);
}}"""


def _write(root: Path, name: str, shape, spacing, seed: int = 0):
    """One chest CT series as the demo writes it; returns (phantom, loaded volume)."""
    from core.io import load_volume
    from core.io.writers import write_dicom_series
    from core.phantoms import chest_ct_phantom

    ph = chest_ct_phantom(shape, spacing, seed=seed)
    write_dicom_series(np.rint(ph.hu).astype(np.int16), root / "ct" / name, spacing=spacing,
                       patient_id="DEMO-000", series_description="Synthetic chest CT",
                       window=(-600.0, 1500.0))
    return ph, load_volume(root / "ct" / name)


def _box(k: int) -> tuple[float, float, float, float]:
    """A different box on neighbouring slices, so that a box saved on the wrong slice shows."""
    k %= 10
    return 0.1 + 0.02 * k, 0.12 + 0.015 * k, 0.85 - 0.02 * k, 0.7 - 0.01 * k


class Page:
    """The new Annotate page: the box canvas, its painted slice, the page's buttons."""

    def __init__(self, page, url: str) -> None:
        self.page, self.url = page, url

    def open(self, name: str, volume) -> None:
        self.page.goto(f"{self.url}/annotate?annotator={ANNOTATOR}")
        self.page.get_by_test_id("stSelectbox").filter(has_text="Volume").click()
        self.page.get_by_role("option", name=re.compile(re.escape(name))).click()
        self.wait_shown(volume.volume_id, volume.shape[0] // 2)
        self.page.evaluate(TIMES_JS)

    def wait_shown(self, volume_id: str, z: int) -> None:
        self.page.wait_for_function(SHOWN_JS, arg=[volume_id, z], polling="raf", timeout=60_000)

    def choose_run(self, run_name: str) -> None:
        """The run in "Proposals from" (its label starts with the run's name)."""
        self.page.get_by_test_id("stSelectbox").filter(has_text="Proposals from").click()
        self.page.get_by_role("option", name=re.compile(re.escape(run_name))).click()
        self.page.wait_for_function(
            "(n) => [...document.querySelectorAll('[data-testid=stSelectbox]')]"
            ".some(s => s.innerText.includes('Proposals from') && [...s.querySelectorAll('input')]"
            ".some(i => i.value.includes(n)))", arg=run_name)

    def wait_kind(self, kind: str) -> None:
        self.page.wait_for_function(f"() => ({KIND_JS})() === '{kind}'", polling="raf", timeout=60_000)

    def go_to(self, volume_id: str, z: int) -> None:
        field = self.page.get_by_label("Slice", exact=True)
        field.fill(str(z + 1))
        field.press("Enter")
        self.wait_shown(volume_id, z)

    def drag(self, box, steps: int = 8) -> None:
        area = self.page.get_by_test_id("bc-stage").bounding_box()
        mouse = self.page.mouse
        x0, y0 = area["x"] + box[0] * area["width"], area["y"] + box[1] * area["height"]
        x1, y1 = area["x"] + box[2] * area["width"], area["y"] + box[3] * area["height"]
        mouse.move(x0, y0)
        mouse.down()
        for i in range(1, steps + 1):
            mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
        mouse.up()

    def click(self, button_key: str) -> None:
        """Move the pointer to the button and click it (as a hand does: no waiting on the page)."""
        area = self.page.locator(f".st-key-{button_key} button").first.bounding_box()
        self.page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)

    def page_ms(self, since_ms: float, until_ms: float) -> float:
        """The page's own share of [since, until]: for each answer (slice painted, box shown or its kind
        changed), the time since the last key or click before it; the harness's reaction time (waiting
        for the answer in Python, then sending the next key) is left out."""
        total, pending = 0.0, None
        for kind, t in self.page.evaluate("() => window.__events"):
            if not since_ms <= t <= until_ms:
                continue
            if kind == "in":
                pending = t
            elif pending is not None:
                total += t - pending
                pending = None
        return total

    def painted(self, volume_id: str) -> dict[int, float]:
        """{slice: ms when it was first painted} for this volume."""
        out: dict[int, float] = {}
        for vid, z, t in self.page.evaluate("() => window.__painted"):
            if vid == volume_id and z not in out:
                out[z] = t
        return out


def _new_page(browser, height: int = 1000, timeout_ms: int = 60_000):
    """A fresh browser context (1600 x `height`) and its page; the caller closes the context."""
    context = browser.new_context(viewport={"width": 1600, "height": height})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    return context, page


def _wait_stable(store: BoxStore, volume_id: str, expected: int, timeout: float = 60.0) -> dict[int, dict]:
    """The volume's rows once there are `expected` of them or they stop changing for 3 s."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        rows = store.for_volume(volume_id) if store.path.exists() else {}
        key = sorted((z, r["Xmin"], r["Annotator"]) for z, r in rows.items())
        if key != last:
            last, since = key, time.monotonic()
        if (len(rows) >= expected and all(r["Annotator"] == ANNOTATOR for r in rows.values())) \
                or time.monotonic() - since > 3:
            return rows
        time.sleep(0.2)
    return rows


def _score(rows: dict[int, dict], volume, drawn: dict[int, tuple]) -> dict[str, int]:
    tol = 2.5 / 64 / 4  # a quarter of a 64 px slice's pixel, in the canvas's finer pixels
    saved = misplaced = 0
    for z, box in drawn.items():
        row = rows.get(z)
        if row is None:
            continue
        got = (row["Xmin"], row["Ymin"], row["Xmax"], row["Ymax"])
        off = max(abs(a - b) for a, b in zip(got, box, strict=True))
        if row["Image"] == volume.slice_ids[z] and off < tol:
            saved += 1
        else:
            misplaced += 1
    return {"drawn": len(drawn), "saved": saved, "misplaced": misplaced,
            "lost": len(drawn) - saved - misplaced}


# ----------------------------------------------------------------------------------------- lost


def _lost_new(browser, url: str, store: BoxStore, volume, drags: int) -> dict:
    context, page = _new_page(browser)
    p = Page(page, url)
    try:
        p.open("lost", volume)
        p.go_to(volume.volume_id, 0)
        drawn, gaps = {}, []
        nxt = page.locator(".st-key-annotate_next button").first.bounding_box()
        at = (nxt["x"] + nxt["width"] / 2, nxt["y"] + nxt["height"] / 2)
        for z in range(drags):
            p.wait_shown(volume.volume_id, z)
            p.drag(_box(z))
            t0 = time.perf_counter()
            page.mouse.click(*at)
            gaps.append(time.perf_counter() - t0)
            drawn[z] = _box(z)
        p.wait_shown(volume.volume_id, drags)
        rows = _wait_stable(store, volume.volume_id, drags)
        page.screenshot(path=str(SHOTS / "bench_annotate_lost.png"))
    finally:
        context.close()
    return {**_score(rows, volume, drawn), "click_ms": 1000 * statistics.median(gaps)}


@contextmanager
def _old_app(ref: str, root: Path, tmp: Path):
    """The app at git `ref`, exported with git archive, served by run_app like this one."""
    code, state = tmp / "old_app", tmp / "old"
    code.mkdir()
    state.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    with run_app(root, state, app_dir=code) as url:
        yield url, BoxStore(state / "annotations" / "lung_bbox.csv")


# The old page (streamlit-drawable-canvas, a canvas per slice): slice z is on screen once its progress
# text names it and exactly one canvas is left, its background painted.
OLD_SHOWN_JS = """(z) => {
  const text = [...document.querySelectorAll('[data-testid=stProgress] p, p')]
    .some(p => p.innerText.startsWith(`Slice ${z + 1} of `));
  const hosts = [...document.querySelectorAll('[data-testid=stBidiComponentIsolated]')]
    .filter(h => h.shadowRoot && h.shadowRoot.querySelector('canvas.upper-canvas'));
  if (!text || hosts.length !== 1) return false;
  const low = hosts[0].shadowRoot.querySelector('canvas.dc-background-canvas');
  if (!low || !low.width) return false;
  const px = low.getContext('2d').getImageData(low.width >> 1, low.height >> 1, 1, 1).data;
  return px[3] > 0;
}"""


OLD_READY_JS = """() => {
  const p = [...document.querySelectorAll('p')].find(p => /^Slice \\d+ of \\d+ ·/.test(p.innerText));
  const hosts = [...document.querySelectorAll('[data-testid=stBidiComponentIsolated]')]
    .filter(h => h.shadowRoot && h.shadowRoot.querySelector('canvas.upper-canvas'));
  if (!p || hosts.length !== 1) return false;
  const low = hosts[0].shadowRoot.querySelector('canvas.dc-background-canvas');
  if (!low || !low.width) return false;
  const px = low.getContext('2d').getImageData(low.width >> 1, low.height >> 1, 1, 1).data;
  return px[3] > 0 ? {z: +p.innerText.match(/^Slice (\\d+)/)[1] - 1} : false;
}"""
OLD_CANVAS_JS = """() => {
  const rects = [...document.querySelectorAll('[data-testid=stBidiComponentIsolated]')]
    .map(h => h.shadowRoot && h.shadowRoot.querySelector('canvas.upper-canvas')).filter(c => c)
    .map(c => c.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
  const r = rects[rects.length - 1];
  return r ? {x: r.x, y: r.y, width: r.width, height: r.height} : null;
}"""


def _lost_old(browser, url: str, store: BoxStore, volume, drags: int) -> dict:
    context, page = _new_page(browser, height=1100)
    try:
        page.goto(f"{url}/annotate?annotator={ANNOTATOR}")
        page.wait_for_function(OLD_SHOWN_JS, arg=volume.shape[0] // 2, polling="raf")
        field = page.get_by_label("Slice", exact=True)
        field.fill("1")
        field.press("Enter")
        drawn, gaps = {}, []
        page.wait_for_function(OLD_SHOWN_JS, arg=0, polling="raf")
        nxt = page.locator(".st-key-annotate_next button").first.bounding_box()
        at = (nxt["x"] + nxt["width"] / 2, nxt["y"] + nxt["height"] / 2)
        stalls = 0
        while len(drawn) < drags and stalls < 20:
            try:  # the slice on screen, whichever it is: the old page may skip or stay
                z = page.wait_for_function(OLD_READY_JS, polling="raf", timeout=20_000).json_value()["z"]
            except Exception:  # noqa: BLE001 - the page stalled: count what was saved
                stalls += 1
                page.mouse.click(*at)
                continue
            area = page.evaluate(OLD_CANVAS_JS)  # the visible one: it can be swapped at any moment
            if area is None or z in drawn or z >= volume.shape[0] - 1:
                if z >= volume.shape[0] - 1:
                    break
                page.mouse.click(*at)
                page.wait_for_timeout(200)
                continue
            box = _box(z)
            x0, y0 = area["x"] + box[0] * area["width"], area["y"] + box[1] * area["height"]
            x1, y1 = area["x"] + box[2] * area["width"], area["y"] + box[3] * area["height"]
            page.mouse.move(x0, y0)
            page.mouse.down()
            for i in range(1, 9):
                page.mouse.move(x0 + (x1 - x0) * i / 8, y0 + (y1 - y0) * i / 8)
            page.mouse.up()
            t0 = time.perf_counter()
            page.mouse.click(*at)
            gaps.append(time.perf_counter() - t0)
            drawn[z] = box
            try:
                page.wait_for_function(f"() => (({OLD_READY_JS})() || {{}}).z !== {z}", polling="raf",
                                       timeout=20_000)
            except Exception:  # noqa: BLE001 - Next did not take: the loop's top presses it again
                stalls += 1
        rows = _wait_stable(store, volume.volume_id, len(drawn))
    finally:
        context.close()
    return {**_score(rows, volume, drawn), "click_ms": 1000 * statistics.median(gaps) if gaps else 0.0}


# ----------------------------------------------------------------------------------------- pace


WORKFLOWS = ("hand", "rule proposal + confirm", "propose all + confirm", "model proposal + confirm",
             "model propose all + confirm")


def _slug(workflow: str) -> str:
    return re.sub(r"[^a-z]+", "_", workflow.replace("+", "")).strip("_")


def _train_model(root: Path, runs_root: Path, boxes: int, epochs: int) -> dict:
    """A lung-localizer run for the model workflows, trained as "Train on these boxes" trains
    (core.annotation_loop.start_training, the quick preset) on the HU-rule boxes of `boxes` lung slices
    of a phantom of its own, confirmed under another annotator, with `epochs` epochs; waits for it."""
    from core import jobs
    from core.annotation_loop import loop_status, start_training
    from core.propose import propose_volume

    _, volume = _write(root, "model_train", PACE_SHAPE, PACE_SPACING, seed=5)
    rule = propose_volume(volume)
    lungs = sorted(z for z, b in rule.items() if b[2] - b[0] > 0.3)
    picks = [lungs[round(i * (len(lungs) - 1) / max(1, boxes - 1))] for i in range(min(boxes, len(lungs)))]
    csv = root.parent / "model_train_boxes.csv"
    store = BoxStore(csv)
    store.upsert_many([{"Image": volume.slice_ids[z], "Xmin": rule[z][0], "Ymin": rule[z][1],
                        "Xmax": rule[z][2], "Ymax": rule[z][3], "Volume": volume.volume_id, "Slice": z}
                       for z in sorted(set(picks))], annotator="bench-train")
    t0 = time.perf_counter()
    job = start_training(root, runs_root, csv, settings={"max_epochs": epochs})
    while True:
        status = loop_status(runs_root, job)
        if status["state"] in jobs.FINAL_STATES:
            break
        time.sleep(1.0)
    seconds = time.perf_counter() - t0
    if status["state"] != jobs.DONE or status["run"] is None:
        raise RuntimeError(f"training the bench's model failed: {status['text']} {status['error']}")
    return {"run": Path(status["run"]).name, "seconds": seconds, "boxes": len(set(picks)), "epochs": epochs,
            "text": status["text"]}


def _pace(browser, url: str, store: BoxStore, name: str, volume, workflow: str, mode: str,
          start: int, count: int, run_name: str | None = None) -> dict:
    context, page = _new_page(browser)
    p = Page(page, url)
    keys = mode == "keys"
    upfront = 0.0
    vid = volume.volume_id
    kind = "model" if workflow.startswith("model") else "rule"
    try:
        p.open(name, volume)
        if kind == "model":
            p.choose_run(run_name)
        p.go_to(vid, start)
        if keys:  # the keys act while the image has focus: click on it once (a click draws nothing)
            area = page.get_by_test_id("bc-stage").bounding_box()
            page.mouse.click(area["x"] + 5, area["y"] + 5)
        if workflow.endswith("propose all + confirm"):
            t0 = time.perf_counter()
            p.click("annotate_propose_all")
            p.wait_kind(kind)
            upfront = time.perf_counter() - t0
        first_ms = p.painted(vid).get(start) or page.evaluate("() => performance.now()")
        for z in range(start, start + count):
            if workflow == "hand":
                p.drag(_box(z))
                page.keyboard.press("ArrowRight") if keys else p.click("annotate_next")
            else:
                if workflow.endswith("proposal + confirm"):
                    page.keyboard.press("p") if keys else p.click("annotate_propose")
                p.wait_kind(kind)
                page.keyboard.press("Enter") if keys else p.click("annotate_confirm_next")
            p.wait_shown(vid, z + 1)
        painted = p.painted(vid)
        marks = [first_ms] + [painted[z] for z in range(start + 1, start + count + 1)]
        spans = zip(marks, marks[1:], strict=False)
        page_times = [p.page_ms(a, b) / 1000 + upfront / count for a, b in spans]
        rows = _wait_stable(store, vid, count)
        shot = f"bench_annotate_{_slug(workflow)}_{mode}.png"
        page.screenshot(path=str(SHOTS / shot))
    finally:
        context.close()
    times = [(b - a) / 1000 + upfront / count for a, b in zip(marks, marks[1:], strict=False)]
    saved = sum(1 for z in range(start, start + count) if rows.get(z, {}).get("Annotator") == ANNOTATOR)
    return {"times": times, "page": page_times, "saved": saved, "upfront": upfront}


def _warm(browser, url: str, volume, run_name: str, z: int) -> float:
    """The server's first model proposal (it loads the run's checkpoint, once per server): seconds
    from "Propose box" to the model's box on the canvas, on a volume of its own, before the timed runs."""
    context, page = _new_page(browser, timeout_ms=120_000)
    p = Page(page, url)
    try:
        p.open("pace_warm", volume)
        p.choose_run(run_name)
        p.go_to(volume.volume_id, z)
        t0 = time.perf_counter()
        p.click("annotate_propose")
        # the model's box, or the page saying it gives none there (a briefly trained model may not)
        page.wait_for_function(f"() => ({KIND_JS})() === 'model' || "
                               "document.body.innerText.includes('The model gives no box on this slice')",
                               polling="raf", timeout=120_000)
        return time.perf_counter() - t0
    finally:
        context.close()


def _pace_table(results: dict, count: int, model: dict | None = None, load: tuple = ()) -> None:
    print(f"\nPage cost per slice, {count} consecutive lung slices of a {PACE_SHAPE[1]}x{PACE_SHAPE[2]}x"
          f"{PACE_SHAPE[0]} chest CT, 1600x1000 window, Chromium headless")
    print(f"{'workflow':<30}{'keys p50':>9}{'keys mean':>10}{'mouse p50':>10}{'mouse mean':>11}"
          f"{'keys/mouse':>11}{'page k p50':>11}{'page m p50':>11}{'saved k/m':>11}")
    for workflow, by_mode in results.items():
        k, m = by_mode["keys"], by_mode["mouse"]
        km, mm = statistics.fmean(k["times"]), statistics.fmean(m["times"])
        print(f"{workflow:<30}{statistics.median(k['times']):>9.2f}{km:>10.2f}"
              f"{statistics.median(m['times']):>10.2f}{mm:>11.2f}{km / mm:>11.2f}"
              f"{statistics.median(k['page']):>11.2f}{statistics.median(m['page']):>11.2f}"
              f"{k['saved']:>6}/{m['saved']:<4}")
    for workflow, by_mode in results.items():
        if by_mode["keys"]["upfront"]:
            print(f"('{workflow}' includes {by_mode['keys']['upfront']:.2f} s (keys run) / "
                  f"{by_mode['mouse']['upfront']:.2f} s (mouse run) for proposing every slice, "
                  f"spread over {count})")
    if model:
        print(f"(the model workflows use run {model['run']}: the quick preset, {model['epochs']} epochs on "
              f"{model['boxes']} confirmed boxes of another phantom, trained in {model['seconds']:.0f} s "
              f"before the app started; the server's first model proposal, which loads the checkpoint, "
              f"took {model.get('warm', float('nan')):.2f} s on a volume of its own; neither is counted "
              "above)")
    if load:
        print(f"load average (1 min) before / after the runs: {load[0]:.1f} / {load[1]:.1f} "
              f"on {os.cpu_count()} cores")
    print("seconds per slice: from the slice painted to the next one painted (in-page timestamps); target "
          "<= 0.5 s per\nconfirmed slice with keys. A person's reading and hand travel come on top. 'page': "
          "the page's own share of it\n(from each key or click to the page's answer: box shown, slice "
          "painted), without the harness's reaction\ntime between an answer and its next key (~0.1 s per "
          "action through Playwright here).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drags", type=int, default=200, help="fast drags with Next (lost boxes)")
    parser.add_argument("--slices", type=int, default=15, help="slices per workflow (page cost)")
    parser.add_argument("--start", type=int, default=12, help="first slice of the page-cost runs")
    parser.add_argument("--old-ref", default=None, help="git ref of the app to measure lost boxes on as well")
    parser.add_argument("--skip-lost", action="store_true")
    parser.add_argument("--skip-pace", action="store_true")
    parser.add_argument("--skip-model", action="store_true",
                        help="leave out the model workflows (no training)")
    parser.add_argument("--model-boxes", type=int, default=12,
                        help="confirmed boxes the bench's model learns")
    parser.add_argument("--model-epochs", type=int, default=3, help="epochs of the bench's model")
    args = parser.parse_args(argv)
    count = max(1, min(args.slices, PACE_SHAPE[0] - 1 - args.start))
    SHOTS.mkdir(exist_ok=True)
    from playwright.sync_api import sync_playwright

    workflows = tuple(w for w in WORKFLOWS if not (args.skip_model and w.startswith("model")))
    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as folder, sync_playwright() as pw:
        tmp = Path(folder)
        root = tmp / "data"
        volumes = {}
        if not args.skip_lost:
            volumes["lost"] = _write(root, "lost", (args.drags + 1, 64, 64), (2.5, 5.0, 5.0), seed=1)[1]
        if not args.skip_pace:
            for w in range(len(workflows)):
                for mode in ("keys", "mouse"):
                    name = f"pace_{w}_{mode}"
                    volumes[name] = _write(root, name, PACE_SHAPE, PACE_SPACING, seed=0)[1]
            if not args.skip_model:
                volumes["pace_warm"] = _write(root, "pace_warm", PACE_SHAPE, PACE_SPACING, seed=0)[1]
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        lost, pace, model = {}, {}, None
        load_before = os.getloadavg()[0]
        (tmp / "app").mkdir()
        if not args.skip_pace and not args.skip_model:
            model = _train_model(root, tmp / "app" / "runs", args.model_boxes, args.model_epochs)
            print(f"model for the model workflows: {model['text']} in {model['seconds']:.0f} s", flush=True)
        with run_app(root, tmp / "app") as url:
            store = BoxStore(tmp / "app" / "annotations" / "lung_bbox.csv")
            if not args.skip_lost:
                lost["this page"] = _lost_new(browser, url, store, volumes["lost"], args.drags)
                print("lost boxes, this page:", lost["this page"], flush=True)
            if model:
                model["warm"] = _warm(browser, url, volumes["pace_warm"], model["run"], args.start)
                print(f"first model proposal after the server started: {model['warm']:.2f} s", flush=True)
            if not args.skip_pace:
                for w, workflow in enumerate(workflows):
                    pace[workflow] = {}
                    for mode in ("keys", "mouse"):
                        name = f"pace_{w}_{mode}"
                        pace[workflow][mode] = _pace(browser, url, store, name, volumes[name], workflow, mode,
                                                     args.start, count, model["run"] if model else None)
                        mean = statistics.fmean(pace[workflow][mode]["times"])
                        print(workflow, mode, f"{mean:.2f} s/slice", flush=True)
        old_page_missing = importlib.util.find_spec("streamlit_drawable_canvas") is None
        if args.old_ref and not args.skip_lost and old_page_missing:
            print("--old-ref: the old page needs streamlit-drawable-canvas; "
                  "pip install streamlit-drawable-canvas==0.13.0 (skipped)")
        elif args.old_ref and not args.skip_lost:
            lost_root = tmp / "old_data"
            (lost_root / "ct").mkdir(parents=True)
            shutil.copytree(root / "ct" / "lost", lost_root / "ct" / "lost")
            with _old_app(args.old_ref, lost_root, tmp) as (url, store):
                old = _lost_old(browser, url, store, volumes["lost"], args.drags)
                lost[f"old page ({args.old_ref})"] = old
        browser.close()
    if lost:
        print(f"\nLost boxes: {args.drags} slices of a 64x64 CT; on each, as soon as it is painted, a drag "
              "(8 moves) and a click on Next")
        print(f"{'page':<34}{'drawn':>7}{'saved':>7}{'misplaced':>10}{'lost':>6}{'click after up':>16}")
        for name, r in lost.items():
            print(f"{name:<34}{r['drawn']:>7}{r['saved']:>7}{r['misplaced']:>10}{r['lost']:>6}"
                  f"{r['click_ms']:>13.0f} ms")
    if pace:
        _pace_table(pace, count, model, (load_before, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
