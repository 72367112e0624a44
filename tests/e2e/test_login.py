"""A shared server demands a login on every page, deep links included (SLICEWISE_REQUIRE_LOGIN=1
forces it while the browser still connects over 127.0.0.1); wrong passwords are refused."""

from __future__ import annotations

import pytest

from core import auth
from tests.e2e.conftest import run_app

pytestmark = pytest.mark.e2e


def test_every_page_needs_a_login(page, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    auth.add_user("ana", "correct horse", auth.users_file(root))
    with run_app(root, tmp_path, {"SLICEWISE_REQUIRE_LOGIN": "1"}) as url:
        page.goto(f"{url}/annotate")  # a deep link first
        page.get_by_text("log in to continue").wait_for()
        assert page.get_by_role("heading", name="Annotate lung boxes").count() == 0
        page.get_by_label("User", exact=True).fill("ana")
        page.get_by_label("Password", exact=True).fill("wrong horse")
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("Wrong user name or password.").wait_for()
        page.get_by_label("Password", exact=True).fill("correct horse")
        page.get_by_role("button", name="Log in").click()
        page.get_by_text("Logged in as").wait_for()
        page.goto(f"{url}/review")  # a new session: the login is asked again
        page.get_by_text("log in to continue").wait_for()
