"""The app makes no request to any host but its own: every request the browser makes on every
page is recorded (page.on("request")) and any host other than 127.0.0.1 / localhost fails."""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np
import pytest

from core.io.writers import write_dicom_series
from tests.e2e.conftest import run_app

pytestmark = pytest.mark.e2e

PAGES = {"": "Slicewise", "viewer": None, "annotate": "Annotate lung boxes", "review": "Annotations",
         "train": "Train", "predict": None}
LOCAL = {"127.0.0.1", "localhost"}


def test_no_page_requests_another_host(page, tmp_path):
    root = tmp_path / "data"
    hu = (np.arange(4 * 24 * 24).reshape(4, 24, 24) % 2000 - 1000).astype(np.int16)
    write_dicom_series(hu, root / "ct" / "series", spacing=(2.0, 0.8, 0.8))
    seen: list[tuple[str, str]] = []
    page.on("request", lambda request: seen.append((request.url, page.url)))
    with run_app(root, tmp_path) as url:
        for path, heading in PAGES.items():
            page.goto(f"{url}/{path}")
            page.get_by_test_id("stSidebarNav").get_by_text("Predict & review").wait_for()
            if heading:
                page.get_by_role("heading", name=heading).first.wait_for()
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # late icons, fonts, favicons
    foreign = sorted({(u, on) for u, on in seen
                      if urlparse(u).scheme in ("http", "https", "ws", "wss")
                      and urlparse(u).hostname not in LOCAL})
    assert not foreign, foreign
    assert len(seen) > 20  # the recorder did see the app's own requests
    assert not any(urlparse(u).scheme not in ("http", "https", "ws", "wss", "data", "blob") for u, _ in seen)
