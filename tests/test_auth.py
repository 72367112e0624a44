"""Logins when shared: scrypt-hashed users under the data root; the app demands a login, refuses wrong
passwords without saying which part was wrong, and records the logged-in user as the annotator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import auth

REPO = Path(__file__).resolve().parents[1]


def test_hash_verify_and_file(data_root):
    path = auth.add_user("ana", "correct horse")
    assert path == data_root / ".slicewise" / "users.json" and path.stat().st_mode & 0o077 == 0
    stored = json.loads(path.read_text())["users"]["ana"]
    assert stored.startswith("scrypt$") and "correct horse" not in path.read_text()
    assert auth.verify("ana", "correct horse")
    assert not auth.verify("ana", "wrong horse") and not auth.verify("bob", "correct horse")
    assert not auth.verify("", "")
    with pytest.raises(auth.AuthError):
        auth.add_user("x", "short")


def test_login_required_when_shared_or_forced(monkeypatch):
    monkeypatch.delenv("SLICEWISE_REQUIRE_LOGIN", raising=False)
    monkeypatch.delenv("SLICEWISE_SHARED", raising=False)
    assert not auth.login_required("127.0.0.1")
    assert auth.login_required("0.0.0.0")
    monkeypatch.setenv("SLICEWISE_REQUIRE_LOGIN", "1")
    assert auth.login_required("127.0.0.1")


def _app() -> AppTest:
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()


def test_app_demands_a_login_and_refuses_wrong_passwords(data_root, monkeypatch):
    monkeypatch.setenv("SLICEWISE_REQUIRE_LOGIN", "1")
    auth.add_user("ana", "correct horse")
    at = _app()
    assert not at.exception
    assert at.text_input(key="login_password") is not None
    assert not [m for m in at.metric]  # no page content before a login
    for name, password in (("ana", "wrong horse"), ("bob", "correct horse")):
        at.text_input(key="login_user").set_value(name)
        at.text_input(key="login_password").set_value(password)
        at.button[0].click().run()
        assert not at.exception
        assert [e.value for e in at.error] == ["Wrong user name or password."]
        assert "auth_user" not in at.session_state
    at.text_input(key="login_user").set_value("ana")
    at.text_input(key="login_password").set_value("correct horse")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert at.session_state["auth_user"] == "ana" and at.session_state["annotator"] == "ana"
    assert any(m.label == "Volumes" for m in at.metric)  # Home is shown


def test_loopback_without_the_setting_needs_no_login(data_root, monkeypatch):
    monkeypatch.delenv("SLICEWISE_REQUIRE_LOGIN", raising=False)
    monkeypatch.delenv("SLICEWISE_SHARED", raising=False)
    at = _app()
    assert not at.exception and any(m.label == "Volumes" for m in at.metric)
