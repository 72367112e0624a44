"""Home in the real app and Chromium: the data root's contents, and demo data created from a button."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from core.io.writers import write_dicom_series
from tests.e2e.conftest import run_app

pytestmark = pytest.mark.e2e
SHOTS = Path("/tmp/shots")


def _metric(page, label: str) -> str:
    card = page.get_by_test_id("stMetric").filter(has_text=label)
    return card.get_by_test_id("stMetricValue").inner_text()


def test_home_lists_the_data_root_and_switches_roots(page, tmp_path):
    root = tmp_path / "data"
    write_dicom_series(np.full((3, 16, 16), -1000, np.int16), root / "ct" / "series_a")
    other = tmp_path / "other"
    other.mkdir()
    SHOTS.mkdir(exist_ok=True)
    with run_app(root, tmp_path) as url:
        page.goto(url)
        page.get_by_text("In this data root").wait_for()
        assert _metric(page, "Volumes") == "1"
        expect(page.get_by_test_id("stDataFrame")).to_be_visible()  # the volume table (a canvas grid)
        page.screenshot(path=str(SHOTS / "home.png"), full_page=True)

        field = page.get_by_label("Data root", exact=True).and_(page.get_by_test_id("stTextInputField"))
        field.fill(str(other))
        field.press("Enter")
        expect(page.get_by_test_id("stMetric").filter(has_text="Volumes")
               .get_by_test_id("stMetricValue")).to_have_text("0")

        # The Viewer uses the root chosen on Home (session state), not the environment's.
        page.get_by_test_id("stSidebarNav").get_by_text("Viewer").click()
        expect(page.get_by_text(f"Data root: {other}")).to_be_visible()
