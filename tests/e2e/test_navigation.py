"""A deep link as the very first request of a fresh server still goes through app.py."""

import pytest

from tests.e2e.conftest import run_app

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", ["annotate", "train"])
def test_first_request_to_a_deep_link_keeps_the_app_navigation(page, tmp_path, path):
    root = tmp_path / "data"
    root.mkdir()
    with run_app(root, tmp_path) as url:
        page.goto(f"{url}/{path}")
        nav = page.get_by_test_id("stSidebarNav")
        nav.get_by_text("Predict & review").wait_for()
        assert nav.get_by_text("Home", exact=True).is_visible()
        assert nav.get_by_text("app", exact=True).count() == 0  # no old-style file-name entries
        heading = "Annotate lung boxes" if path == "annotate" else "Train"
        page.get_by_role("heading", name=heading).first.wait_for()
