"""The Viewer compositing in the browser vs the server path (plain slider + st.image rerun), one run.

Starts the real app on a data root holding the 512x512 LIDC-IDRI-0001 series (data/lidc; a synthetic
133x512x512 series when it is missing), opens the Viewer in Chromium and measures, in the page with
performance.now(), from the input event to the frame in which the new picture is painted:
- stepping 50 slices with the keyboard, without overlays and with a stored mask + heatmap shown;
- window/level by right-button drag (40 pointer moves) and a heatmap opacity change (30 inputs);
- the same on the server path in the same run (slider steps, overlay checkboxes, a window preset pick):
  the baseline of the ratio column.
Also: the compositing time alone per paint; the streamlit process's peak RSS against the volume's
float32 size (idle read cold, and warm after another session opened the Viewer on a tiny series so
that the imports are done); the browser's JS heap (CDP) and the viewer's typed arrays; the time to
the first slice after clicking "Viewer", split into its parts, with the server's encoding timed alone
in this process against the old render + PNG of windowed frames.

    .venv/bin/python -m bench.bench_stepping [--steps 50]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from core import settings
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, run_app

REPO = Path(__file__).resolve().parents[1]

# Installed once per page: a capture-phase keydown listener starts the clock; for the server path a
# requestAnimationFrame loop watches the st.image <img> until a new, decoded src is on screen.
HOOKS = r"""
() => {
  window.__bench = { t0: 0, samples: [], mode: "fast", prev: null };
  window.addEventListener("keydown", () => {
    const b = window.__bench;
    b.t0 = performance.now();
    if (b.mode !== "plain") return;
    const img = () => document.querySelector('[data-testid="stMain"] [data-testid="stImage"] img');
    b.prev = img() ? img().src : null;
    const poll = () => {
      const el = img();
      if (el && el.src !== b.prev && el.complete && el.naturalWidth) {
        const ch = new MessageChannel();
        ch.port1.onmessage = () => b.samples.push(performance.now() - b.t0);
        ch.port2.postMessage(0);
        return;
      }
      requestAnimationFrame(poll);
    };
    requestAnimationFrame(poll);
  }, true);
}
"""

# The whole stack is in the browser: the viewer marks missing frames with data-pending (a viewer that
# ships every frame at once never sets it). The component lives in a shadow root.
STACK_COMPLETE = """() => {
  const r = [...document.querySelectorAll('*')].map((e) => e.shadowRoot).filter(Boolean)
    .map((s) => s.querySelector('.sw-root[data-painted]')).find(Boolean);
  return r && !r.hasAttribute('data-pending');
}"""
FIRST_PAYLOAD_MIN_BYTES = 64 * 1024  # a 512x512 raw slice deflated is ~200 KB; page deltas a few KB

# Installed before the page loads: page-clock marks of the click on "Viewer", of the volume header
# (the page shows it right after load_volume returns), and of the viewer's first payload and paint.
MARKS = r"""
window.__benchMarks = {};
document.addEventListener("click", () => { window.__benchMarks.click ||= performance.now(); }, true);
const tick = () => {
  const m = window.__benchMarks;
  if (m.click && !m.header) {
    for (const el of document.querySelectorAll('[data-testid="stMarkdownContainer"]')) {
      if (el.textContent.includes("voxels · spacing")) { m.header = performance.now(); break; }
    }
  }
  if (m.click && !m.payload && window.__slicewiseLoad) m.payload = window.__slicewiseLoad.t;
  if (m.click && !m.paint && window.__slicewisePaint) m.paint = window.__slicewisePaint.t;
  requestAnimationFrame(tick);
};
requestAnimationFrame(tick);
"""


def _data_root(tmp: Path) -> tuple[Path, str]:
    """A data root with one 512x512 series: a link to the LIDC sample, else a synthetic series."""
    root = tmp / "data"
    root.mkdir()
    for lidc in (settings.data_root() / "lidc", REPO / "data" / "lidc"):
        if lidc.is_dir() and any(lidc.iterdir()):
            shutil.copytree(lidc, root / "lidc")  # find_volumes does not follow links
            return root, "LIDC-IDRI-0001 (data/lidc)"
    from core.io.writers import write_dicom_series

    z, y, x = np.mgrid[:133, :512, :512].astype(np.float32)
    rng = np.random.default_rng(0)
    hu = -1000 + 1040 * (((y - 256) / 200) ** 2 + ((x - 256) / 230) ** 2 < 1)
    lungs = ((y - 250) / 150) ** 2 + ((np.abs(x - 256) - 110) / 70) ** 2 < 1 - (z - 66) ** 2 / 80**2
    hu = np.where(lungs, -850, hu) + rng.normal(0, 20, hu.shape)
    write_dicom_series(hu.astype(np.int16), root / "synthetic", spacing=(2.5, 0.7, 0.7))
    return root, "synthetic 133x512x512 series"


def _streamlit_pid(url: str) -> int | None:
    from tests.conftest import pids_where

    port = url.rsplit(":", 1)[1]
    found = pids_where(lambda cmd: b"streamlit" in b" ".join(cmd) and port.encode() in cmd)
    return found[0] if found else None


def _rss_mib(pid: int | None, field: str) -> float:
    if pid is None:
        return float("nan")
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Socket:
    """Websocket frames the page receives: (perf_counter, bytes) for each frame, recorded by Playwright."""

    def __init__(self, page) -> None:
        self.frames: list[tuple[float, int]] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._received))

    def _received(self, payload) -> None:
        self.frames.append((time.perf_counter(), len(payload)))

    def first_big_after(self, t0: float, min_bytes: int) -> float:
        """When the first frame of at least `min_bytes` (a slice payload) arrived after t0."""
        return next((t for t, size in self.frames if t > t0 and size >= min_bytes), float("nan"))

    def bytes_after(self, t0: float) -> int:
        return sum(size for t, size in self.frames if t > t0)


def _open_viewer(page, url: str, socket: _Socket) -> dict[str, float]:
    """Open the Viewer on the first volume; seconds from the click on "Viewer" to: the volume header
    on screen, the first slice payload in the component, the first slice painted (page clock), the
    first slice payload over the websocket and the whole stack in the browser (Playwright's clock)."""
    page.add_init_script(MARKS)
    page.goto(url)
    page.evaluate("() => { window.__benchMarks = {}; }")
    page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
    t0 = time.perf_counter()
    page.locator(".sw-root[data-painted]").wait_for(timeout=120_000)
    page.wait_for_function(STACK_COMPLETE, timeout=120_000)
    complete = time.perf_counter() - t0
    page.wait_for_timeout(500)  # the last websocket events reach Python while Playwright waits
    marks = page.evaluate("() => window.__benchMarks")
    since_click = {name: (marks[name] - marks["click"]) / 1000 if marks.get(name) else float("nan")
                   for name in ("header", "payload", "paint")}
    return {**since_click, "received": socket.first_big_after(t0, FIRST_PAYLOAD_MIN_BYTES) - t0,
            "complete": complete, "mib": socket.bytes_after(t0) / 2**20}


def _server_costs(root: Path) -> dict[str, float]:
    """What the server does before the first slice can leave, timed here on the same data: load_volume,
    the browser payload (coding + the opening slice, then every slice) against the old way of
    rendering + PNG-encoding windowed frames."""
    from core import render, view_payload
    from core.io import find_volumes, load_volume
    from core.windowing import PRESETS
    from pages._ui.frames import encode_png

    t = time.perf_counter()
    volume = load_volume(find_volumes(root)[0])
    load_s = time.perf_counter() - t
    window, n = PRESETS["lung"], volume.shape[0]
    t = time.perf_counter()
    coding = view_payload.intensity_coding(volume.array)
    coding_s = time.perf_counter() - t
    t = time.perf_counter()
    view_payload.encode_slices(volume.array, [n // 2], coding)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    blobs = view_payload.encode_slices(volume.array, range(n), coding)
    stack_s = time.perf_counter() - t
    t = time.perf_counter()
    encode_png(render.render_slice(volume.array, "axial", n // 2, window)[..., 0])
    png_first_s = time.perf_counter() - t
    t = time.perf_counter()
    pngs = [encode_png(render.render_slice(volume.array, "axial", i, window)[..., 0]) for i in range(n)]
    png_stack_s = time.perf_counter() - t
    return {"load": load_s, "coding": coding_s, "encode_first": first_s, "encode_stack": stack_s,
            "png_first": png_first_s, "png_stack": png_stack_s, "n": n, "shape": volume.shape,
            "raw_mib": sum(map(len, blobs)) / 2**20, "png_mib": sum(map(len, pngs)) / 2**20,
            "float32_mib": volume.nbytes / 2**20, "volume": volume}


def _store_prediction(volume, runs: Path, tmp: Path) -> None:
    """A mask (the 'lungs') and a heatmap (a blob per lung) for every slice, as a family would store them."""
    from core.predictions import Prediction, save_prediction

    z, y, x = volume.shape
    hu = volume.array
    mask = (hu < -700).astype(np.uint8)
    mask[:, : y // 8] = 0
    yy, xx = np.mgrid[:y, :x].astype(np.float32)
    blob = np.exp(-(((yy - y / 2) / (y / 6)) ** 2 + ((np.abs(xx - x / 2) - x / 5) / (x / 10)) ** 2))
    heat = np.repeat(blob[np.newaxis].astype(np.float32), z, axis=0)
    checkpoint = tmp / "bench.ckpt"
    checkpoint.write_bytes(b"bench: the store keys on the file")
    save_prediction(volume, Prediction(family="lung_localizer", mask=mask, heatmap=heat), checkpoint,
                    runs_root=runs)


PAINTS = "() => window.__slicewisePaint ? window.__slicewisePaint.n : 0"
# The viewer's own typed arrays: decoded slices and layers (ArrayBuffers live outside the JS heap).
VIEWER_BYTES = """() => {
  const reg = window.__slicewiseViewer2; let n = 0;
  for (const v of reg.vols.values()) {
    for (const s of v.slices) if (s) n += s.byteLength;
    for (const l of v.layers.values()) n += l.byteLength;
  }
  return n;
}"""


def _step_fast(page, steps: int) -> list[tuple[float, float]]:
    """(ms from keydown to the new slice painted, ms of compositing in the viewer) per key press."""
    canvas = page.locator(".sw-canvas")
    canvas.hover()
    page.locator(".sw-root").focus()
    page.wait_for_function(STACK_COMPLETE, timeout=120_000)
    page.wait_for_timeout(1500)  # let the browser finish decoding, as a reader would
    samples = []
    for i in range(steps):
        before = page.evaluate(PAINTS)
        page.keyboard.press("ArrowDown" if (i // 20) % 2 == 0 else "ArrowUp")
        page.wait_for_function(f"(n) => ({PAINTS})() > n", arg=before)
        samples.append(page.evaluate("() => [window.__slicewisePaint.t - window.__bench.t0, "
                                     "window.__slicewisePaint.draw]"))
    return samples


def _input_to_paint(page, act, count: int) -> list[tuple[float, float]]:
    """`act(i)` fires one input event (the viewer marks window.__slicewiseInput); ms until it is painted."""
    samples = []
    for i in range(count):
        before = page.evaluate(PAINTS)
        act(i)
        page.wait_for_function(f"(n) => ({PAINTS})() > n", arg=before)
        samples.append(page.evaluate("() => [window.__slicewisePaint.t - window.__slicewiseInput, "
                                     "window.__slicewisePaint.draw]"))
    return samples


def _drag_window(page, moves: int) -> list[tuple[float, float]]:
    box = page.locator(".sw-canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down(button="right")
    samples = _input_to_paint(page, lambda i: page.mouse.move(cx + 3 * (i % 40) - 60, cy + 2 * (i % 30) - 30),
                              moves)
    page.mouse.up(button="right")
    return samples


def _fade(page, name: str, moves: int) -> list[tuple[float, float]]:
    slider = page.locator(".sw-layer").filter(has_text=name).locator(".sw-opacity")
    return _input_to_paint(page, lambda i: slider.evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input')); }",
        0.1 + 0.8 * ((i % 9) / 8)),
        moves)


def _layers_on(page, names: list[str]) -> None:
    page.locator(".sw-layer").first.wait_for(timeout=120_000)
    for name in names:
        page.locator(".sw-layer").filter(has_text=name).locator(".sw-on").check()
    page.wait_for_function("""() => { const reg = window.__slicewiseViewer2;
        return [...reg.vols.values()].some((v) => v.layers.size >= 2); }""", timeout=120_000)


def _plain_mode(page) -> None:
    page.get_by_test_id("stRadio").filter(has_text="Stepping").get_by_text("Server slider").click()
    page.get_by_test_id("stSlider").filter(has_text="Slice").get_by_role("slider").wait_for()


def _wait_new_image(page, before: str | None, timeout: float = 60_000) -> None:
    page.wait_for_function("""(before) => { const el = document.querySelector(
        '[data-testid="stMain"] [data-testid="stImage"] img');
        return el && el.src !== before && el.complete && el.naturalWidth; }""", arg=before, timeout=timeout)


IMG_SRC = """() => { const el = document.querySelector('[data-testid="stMain"] [data-testid="stImage"] img');
  return el ? el.src : null; }"""


def _step_plain(page, steps: int) -> list[float]:
    thumb = page.get_by_test_id("stSlider").filter(has_text="Slice").get_by_role("slider")
    page.evaluate("() => { window.__bench.mode = 'plain'; window.__bench.samples = []; }")
    thumb.focus()
    for i in range(steps):
        page.keyboard.press("ArrowRight" if (i // 20) % 2 == 0 else "ArrowLeft")
        page.wait_for_function("(n) => window.__bench.samples.length >= n", arg=i + 1, timeout=60_000)
        page.wait_for_timeout(50)
    page.evaluate("() => { window.__bench.mode = 'fast'; }")
    return page.evaluate("() => window.__bench.samples")


def _plain_overlays_on(page, names: list[str]) -> None:
    for name in names:
        before = page.evaluate(IMG_SRC)
        page.get_by_test_id("stCheckbox").filter(has_text=name).first.click()
        _wait_new_image(page, before)
        page.wait_for_timeout(300)


def _plain_window_changes(page, count: int) -> list[float]:
    """Server path: pick another preset in the side column; ms from the pick to the new image painted."""
    samples = []
    for i in range(count):
        box = page.get_by_test_id("stSelectbox").filter(has_text="Window")
        box.click()
        option = page.get_by_role("option", name="mediastinum" if i % 2 == 0 else "lung", exact=True)
        before = page.evaluate(IMG_SRC)
        t0 = page.evaluate("() => performance.now()")
        option.click()
        _wait_new_image(page, before)
        samples.append(page.evaluate("() => performance.now()") - t0)
        page.wait_for_timeout(300)
    return samples


def _browser_heap(page) -> dict[str, float]:
    client = page.context.new_cdp_session(page)
    client.send("HeapProfiler.collectGarbage")
    client.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in client.send("Performance.getMetrics")["metrics"]}
    return {"js_heap_mib": metrics.get("JSHeapUsedSize", float("nan")) / 2**20,
            "viewer_arrays_mib": page.evaluate(VIEWER_BYTES) / 2**20}


def _warm_up(browser, url: str, tmp: Path) -> None:
    """Another session opens the Viewer on a tiny series under another data root, so that the server has
    imported every module the Viewer needs (pandas, the readers: ~200 MB) before "idle" is read."""
    from core.io.writers import write_dicom_series

    tiny = tmp / "warm"
    write_dicom_series(np.full((4, 32, 32), -500, np.int16), tiny / "tiny", spacing=(2.0, 1.0, 1.0))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    box = page.get_by_test_id("stTextInput").filter(has_text="Data root").locator("input")
    box.fill(str(tiny))
    box.press("Enter")
    page.get_by_text("Volumes").first.wait_for()
    page.wait_for_timeout(1000)
    page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
    page.locator(".sw-root[data-painted]").wait_for(timeout=120_000)
    page.get_by_text("Montage").first.wait_for()
    page.wait_for_timeout(1500)
    page.close()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


MASK, HEAT = "Predicted mask", "Heatmap"


def run(steps: int) -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-stepping-") as tmp_name:
        tmp = Path(tmp_name)
        root, what = _data_root(tmp)
        server = _server_costs(root)
        volume = server.pop("volume")
        with run_app(root, tmp) as url, sync_playwright() as pw:
            pid = _streamlit_pid(url)
            urllib.request.urlopen(url).read()
            idle_mib = _rss_mib(pid, "VmRSS")
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            _warm_up(browser, url, tmp)
            warm_mib = _rss_mib(pid, "VmRSS")
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            socket = _Socket(page)
            opening = _open_viewer(page, url, socket)
            page.evaluate(HOOKS)
            fast = _step_fast(page, steps)
            viewing_peak = _rss_mib(pid, "VmHWM")
            heap = _browser_heap(page)

            _store_prediction(volume, tmp / "runs", tmp)  # now the volume has a mask and a heatmap
            del volume
            page.goto(url)
            page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
            page.locator(".sw-root[data-painted]").wait_for(timeout=120_000)
            page.evaluate(HOOKS)
            _layers_on(page, [MASK, HEAT])
            fast_overlays = _step_fast(page, steps)
            drag = _drag_window(page, 40)
            fade = _fade(page, HEAT, 30)
            overlay_peak = _rss_mib(pid, "VmHWM")
            heap_overlays = _browser_heap(page)

            _plain_mode(page)
            page.evaluate(HOOKS)
            plain = _step_plain(page, min(steps, 30))
            _plain_overlays_on(page, [MASK, HEAT])
            plain_overlays = _step_plain(page, min(steps, 30))
            plain_window = _plain_window_changes(page, 6)
            browser.close()
    mib = server["float32_mib"]
    composite = {"stepping, no overlay": fast, "stepping, mask + heatmap on": fast_overlays,
                 "window change (browser: right-drag)": drag, "heatmap opacity change": fade}
    fast, fast_overlays, drag, fade = ([t for t, _ in v] for v in composite.values())
    print(f"data: {what} {server['shape']}; {steps} key presses per viewer run; latency = input event -> "
          "repaint (page clock)")
    _report([("stepping, no overlay", plain, fast),
             ("stepping, mask + heatmap on", plain_overlays, fast_overlays),
             ("window change (browser: right-drag)", plain_window, drag),
             ("heatmap opacity change", plain_window, fade)])
    print("compositing alone in the viewer (JS, ms):  " + "; ".join(
        f"{name}: p50 {_pct([d for _, d in v], 50):.1f}, p95 {_pct([d for _, d in v], 95):.1f}"
        for name, v in composite.items()))
    _report_opening(opening, server)
    print(f"streamlit RSS (float32 volume {mib:.0f} MiB): idle {idle_mib:.0f} MiB cold (nothing imported), "
          f"{warm_mib:.0f} MiB warm (the Viewer's modules imported by a tiny series in another session)")
    peaks = (("peak while viewing", viewing_peak, "1.94x"), ("peak with a mask + heatmap shown", overlay_peak,
                                                                "3.33x"))
    for label, peak, before in peaks:
        print(f"  {label:34} {peak:5.0f} MiB: peak - warm idle = {(peak - warm_mib) / mib:.2f}x the volume "
              f"(target <= 1.5x; before the memory work: {before}), "
              f"peak - cold idle = {(peak - idle_mib) / mib:.2f}x")
    for label, h in (("viewing", heap), ("with the two layers", heap_overlays)):
        print(f"browser ({label}): JS heap {h['js_heap_mib']:.0f} MiB (CDP JSHeapUsedSize), the viewer's "
              f"typed arrays {h['viewer_arrays_mib']:.0f} MiB")
    return 0


def _report(rows) -> None:
    print(f"{'what':38} {'server p50':>10} {'p95':>7} {'browser p50':>12} {'p95':>7} {'x p50':>6} "
          f"{'target':>18}")
    for name, server, browser in rows:
        target = "p50<=20, p95<=50" if name.startswith("stepping") else "p95<=50"
        met = (_pct(browser, 95) <= 50 and (_pct(browser, 50) <= 20 or not name.startswith("stepping")))
        print(f"{name:38} {_pct(server, 50):10.1f} {_pct(server, 95):7.1f} {_pct(browser, 50):12.1f} "
              f"{_pct(browser, 95):7.1f} {_pct(server, 50) / _pct(browser, 50):5.0f}x "
              f"{target:>14} {'met' if met else 'NOT met'}")
    print("(server = the plain 'Server slider' path: a rerun, render_slice, st.image; measured in this run. "
          "The opacity row's server figure is its preset-pick rerun: the server path redraws alike.)")


def _report_opening(opening: dict[str, float], server: dict[str, float]) -> None:
    """Time to first slice after clicking "Viewer", split into its parts."""
    header, payload, paint = opening["header"], opening["payload"], opening["paint"]
    print('time to first slice after clicking "Viewer" (s):')
    rows = [
        ("volume header on screen (page imports, listing, load)", header),
        ("  load_volume alone (timed in this process)", server["load"]),
        ("first slice payload in the viewer component", payload),
        ("  header -> payload (overlays, coding, send, JS)", payload - header),
        ("  intensity coding of the volume (this process, cached)", server["coding"]),
        ("  encode the first raw slice (this process)", server["encode_first"]),
        ("  encode every raw slice (this process)", server["encode_stack"]),
        ("  old way: render + PNG of the first slice", server["png_first"]),
        ("  old way: render + PNG of all slices", server["png_stack"]),
        ("first slice payload over the websocket (Playwright)", opening["received"]),
        ("first slice painted", paint),
        ("  payload -> painted (inflate, window, draw)", paint - payload),
        ("whole volume decoded in the browser (Playwright)", opening["complete"]),
    ]
    for name, seconds in rows:
        print(f"  {name:56} {seconds:7.2f}")
    after_load = paint - header
    print(f"  first slice painted after the volume is loaded (header -> painted): {after_load:.2f} s "
          "(before: 0.3-0.4 s)")
    print(f"  bytes over the websocket until every slice is in: {opening['mib']:.1f} MiB "
          f"(raw uint16 deflated {server['raw_mib']:.1f} MiB; windowed PNG frames were "
          f"{server['png_mib']:.1f} MiB"
          " per window and per overlay change)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    return run(args.steps)


if __name__ == "__main__":
    sys.exit(main())
