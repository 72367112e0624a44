"""Slice stepping in the browser: client-side slice viewer vs the plain slider + st.image rerun.

Starts the real app on a data root holding the 512x512 LIDC-IDRI-0001 series (data/lidc; a synthetic
512x512 series when it is missing), opens the Viewer in Chromium and steps through 50 slices with the
keyboard in each mode. Latency is measured in the page with performance.now(): from the keydown
event to the frame in which the new slice image is painted (requestAnimationFrame, then a task after
it). Also reports the streamlit process's peak RSS against the volume's float32 size.

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


def _open_viewer(page, url: str) -> float:
    """Open the Viewer on the first volume; seconds until the first slice is painted."""
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
    t0 = time.perf_counter()
    page.locator(".sw-root[data-painted]").wait_for(timeout=120_000)
    return time.perf_counter() - t0


def _step_fast(page, steps: int) -> list[float]:
    canvas = page.locator(".sw-canvas")
    canvas.hover()
    page.locator(".sw-root").focus()
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
        from core.io import find_volumes, load_volume

        volume = load_volume(find_volumes(root)[0])
        float32_mib = volume.nbytes / 2**20
        del volume
        with run_app(root, tmp) as url, sync_playwright() as pw:
            pid = _streamlit_pid(url)
            urllib.request.urlopen(url).read()
            idle_mib = _rss_mib(pid, "VmRSS")
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            first_paint_s = _open_viewer(page, url)
            page.evaluate(HOOKS)
            fast = _step_fast(page, steps)
            plain = _step_plain(page, steps)
            viewing_mib = _rss_mib(pid, "VmRSS")
            peak_mib = _rss_mib(pid, "VmHWM")
            browser.close()
    _report(what, steps, fast, plain, first_paint_s, float32_mib, idle_mib, viewing_mib, peak_mib)
    return 0


def _report(what, steps, fast, plain, first_paint_s, float32_mib, idle_mib, viewing_mib, peak_mib) -> None:
    print(f"data: {what}; {steps} key presses per mode; latency = keydown -> new slice painted")
    print(f"{'path':38} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    rows = [("plain slider + st.image rerun (baseline)", plain), ("client-side slice viewer", fast)]
    for name, values in rows:
        mean = statistics.fmean(values) if values else float("nan")
        print(f"{name:38} {_pct(values, 50):8.1f} {_pct(values, 95):8.1f} {mean:8.1f}")
    print(f"{'speed-up (baseline / client-side), p50':38} {_pct(plain, 50) / _pct(fast, 50):8.1f}x"
          f" {_pct(plain, 95) / _pct(fast, 95):8.1f}x")
    print(f"target p50 <= 100 ms: {'met' if _pct(fast, 50) <= 100 else 'NOT met'}")
    print(f"first slice painted after opening the Viewer: {first_paint_s:.2f} s (render + encode + transfer)")
    print(f"streamlit RSS: idle {idle_mib:.0f} MiB, while viewing {viewing_mib:.0f} MiB, "
          f"peak {peak_mib:.0f} MiB; volume float32 {float32_mib:.0f} MiB; "
          f"peak - idle = {(peak_mib - idle_mib) / float32_mib:.1f}x the volume")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    return run(args.steps)


if __name__ == "__main__":
    sys.exit(main())
