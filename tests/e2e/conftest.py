"""Browser tests: the real app started with `streamlit run`, driven by Debian's Chromium.

Chromium comes from Debian (`/usr/bin/chromium`), never from `playwright install`. In CI
(`CI=true`) a missing browser fails the run; on a developer machine it skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SLICEWISE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_chromium() -> None:
    if Path(CHROMIUM).exists() or shutil.which("chromium"):
        return
    message = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"streamlit did not become healthy in {timeout}s:\n{log.read_text()}")


@contextmanager
def run_app(data_root: Path, tmp: Path, extra_env: dict[str, str] | None = None, app_dir: Path = REPO):
    """Start `streamlit run app.py` (of `app_dir`: this checkout, or an exported older version) on a
    free port; yield its URL; stop it afterwards."""
    port = _free_port()
    log = tmp / f"streamlit-{port}.log"
    env = dict(os.environ)
    env.update(
        SLICEWISE_DATA=str(data_root),
        SLICEWISE_RUNS=str(tmp / "runs"),
        SLICEWISE_ANNOTATIONS=str(tmp / "annotations" / "lung_bbox.csv"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_dir / "app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def browser():
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def drag(page, target, start: tuple[float, float], end: tuple[float, float], steps: int = 10) -> None:
    """Drag with the mouse from `start` to `end` (pixels relative to `target`'s top-left), in
    several moves as a hand does: the drawing canvas needs intermediate mouse events."""
    area = target.bounding_box()
    x0, y0 = area["x"] + start[0], area["y"] + start[1]
    x1, y1 = area["x"] + end[0], area["y"] + end[1]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
    page.mouse.up()
