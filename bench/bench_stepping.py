"""Slice stepping in the browser: client-side slice viewer vs the plain slider + st.image rerun.

Starts the real app on a data root holding the 512x512 LIDC-IDRI-0001 series (data/lidc; a synthetic
512x512 series when it is missing), opens the Viewer in Chromium and steps through 50 slices with the
keyboard in each mode. Latency is measured in the page with performance.now(): from the keydown
event to the frame in which the new slice image is painted (requestAnimationFrame, then a task after
it). Also reports the streamlit process's peak RSS against the volume's float32 size, and the time
to the first slice after clicking "Viewer", split into: the page run up to load_volume (the volume
header on screen), the first slice's payload reaching the component, its paint, and the whole stack
reaching the browser; load_volume and PNG encoding are also timed alone in this process.

    .venv/bin/python -m bench.bench_stepping [--steps 50]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
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
FIRST_PAYLOAD_MIN_BYTES = 64 * 1024  # a 512x512 slice PNG is ~120 KB; page deltas are a few KB

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

    z, y, x = np.mgrid[:120, :512, :512].astype(np.float32)
    rng = np.random.default_rng(0)
    hu = -1000 + 1040 * (((y - 256) / 200) ** 2 + ((x - 256) / 230) ** 2 < 1)
    lungs = ((y - 250) / 150) ** 2 + ((np.abs(x - 256) - 110) / 70) ** 2 < 1 - (z - 60) ** 2 / 80**2
    hu = np.where(lungs, -850, hu) + rng.normal(0, 20, hu.shape)
    write_dicom_series(hu.astype(np.int16), root / "synthetic", spacing=(2.5, 0.7, 0.7))
    return root, "synthetic 120x512x512 series"


def _streamlit_pid(url: str) -> int | None:
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(cmd) and port.encode() in cmd:
            return int(proc.name)
    return None


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
    """What the server does before the first slice can leave, timed here on the same data:
    load_volume, rendering + PNG-encoding the first slice, and the same for the whole stack."""
    from core import render
    from core.io import find_volumes, load_volume
    from core.windowing import PRESETS
    from pages._ui.slice_viewer import encode_frames, encode_png

    t = time.perf_counter()
    volume = load_volume(find_volumes(root)[0])
    load_s = time.perf_counter() - t
    window, n = PRESETS["lung"], volume.shape[0]
    t = time.perf_counter()
    encode_png(render.render_slice(volume.array, "axial", n // 2, window)[..., 0])
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    encode_frames([render.render_slice(volume.array, "axial", i, window)[..., 0] for i in range(n)])
    stack_s = time.perf_counter() - t
    return {"load": load_s, "encode_first": first_s, "encode_stack": stack_s, "n": n,
            "float32_mib": volume.nbytes / 2**20}


def _step_fast(page, steps: int) -> list[float]:
    canvas = page.locator(".sw-canvas")
    canvas.hover()
    page.locator(".sw-root").focus()
    page.wait_for_function(STACK_COMPLETE, timeout=120_000)
    page.wait_for_timeout(1500)  # let the browser finish decoding the frames, as a reader would
    samples = []
    for _ in range(steps):
        before = page.evaluate("() => window.__slicewisePaint ? window.__slicewisePaint.t : 0")
        page.keyboard.press("ArrowDown")
        page.wait_for_function("(t) => window.__slicewisePaint && window.__slicewisePaint.t > t", arg=before)
        samples.append(page.evaluate("() => window.__slicewisePaint.t - window.__bench.t0"))
    return samples


def _step_plain(page, steps: int) -> list[float]:
    page.get_by_test_id("stRadio").filter(has_text="Stepping").get_by_text("Server slider").click()
    thumb = page.get_by_test_id("stSlider").filter(has_text="Slice").get_by_role("slider")
    thumb.wait_for()
    page.evaluate("() => { window.__bench.mode = 'plain'; window.__bench.samples = []; }")
    thumb.focus()
    for i in range(steps):
        page.keyboard.press("ArrowRight")
        page.wait_for_function("(n) => window.__bench.samples.length >= n", arg=i + 1, timeout=60_000)
        page.wait_for_timeout(50)
    return page.evaluate("() => window.__bench.samples")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(steps: int) -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-stepping-") as tmp_name:
        tmp = Path(tmp_name)
        root, what = _data_root(tmp)
        server = _server_costs(root)
        with run_app(root, tmp) as url, sync_playwright() as pw:
            pid = _streamlit_pid(url)
            urllib.request.urlopen(url).read()
            idle_mib = _rss_mib(pid, "VmRSS")
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            socket = _Socket(page)
            opening = _open_viewer(page, url, socket)
            page.evaluate(HOOKS)
            fast = _step_fast(page, steps)
            plain = _step_plain(page, steps)
            viewing_mib = _rss_mib(pid, "VmRSS")
            peak_mib = _rss_mib(pid, "VmHWM")
            browser.close()
    _report(what, steps, fast, plain)
    _report_opening(opening, server)
    print(f"streamlit RSS: idle {idle_mib:.0f} MiB, while viewing {viewing_mib:.0f} MiB, "
          f"peak {peak_mib:.0f} MiB; volume float32 {server['float32_mib']:.0f} MiB; "
          f"peak - idle = {(peak_mib - idle_mib) / server['float32_mib']:.1f}x the volume")
    return 0


def _report(what, steps, fast, plain) -> None:
    print(f"data: {what}; {steps} key presses per mode; latency = keydown -> new slice painted")
    print(f"{'path':38} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    rows = [("plain slider + st.image rerun (baseline)", plain), ("client-side slice viewer", fast)]
    for name, values in rows:
        mean = statistics.fmean(values) if values else float("nan")
        print(f"{name:38} {_pct(values, 50):8.1f} {_pct(values, 95):8.1f} {mean:8.1f}")
    print(f"{'speed-up (baseline / client-side), p50':38} {_pct(plain, 50) / _pct(fast, 50):8.1f}x"
          f" {_pct(plain, 95) / _pct(fast, 95):8.1f}x")
    print(f"target p50 <= 100 ms: {'met' if _pct(fast, 50) <= 100 else 'NOT met'}")


def _report_opening(opening: dict[str, float], server: dict[str, float]) -> None:
    """Time to first slice after clicking "Viewer", split into its parts."""
    header, payload, paint = opening["header"], opening["payload"], opening["paint"]
    print('time to first slice after clicking "Viewer" (s):')
    rows = [
        ("volume header on screen (page imports, listing, load)", header),
        ("  load_volume alone (timed in this process)", server["load"]),
        ("first slice payload in the viewer component", payload),
        ("  header -> payload (overlays, render + PNG, send, JS)", payload - header),
        ("  render + PNG of the first slice (this process)", server["encode_first"]),
        ("  render + PNG of all slices (this process)", server["encode_stack"]),
        ("first slice payload over the websocket (Playwright)", opening["received"]),
        ("first slice painted", paint),
        ("  payload -> painted (decode, draw)", paint - payload),
        ("whole stack in the browser (Playwright)", opening["complete"]),
    ]
    for name, seconds in rows:
        print(f"  {name:56} {seconds:7.2f}")
    after_load = paint - header
    print(f"  first slice painted after the volume is loaded (header -> painted): {after_load:.2f} s, "
          f"target < 1.5 s: {'met' if after_load < 1.5 else 'NOT met'}")
    print(f"  bytes over the websocket until the stack is complete: {opening['mib']:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    return run(args.steps)


if __name__ == "__main__":
    sys.exit(main())
