"""Paths typed on Home and on the Annotations page are used only under the data root / runs root.

Streamlit AppTest (no browser needed): the pages run for real against a temporary data root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.annotations import BoxStore

REPO = Path(__file__).resolve().parents[2]


def _run(page: str) -> AppTest:
    return AppTest.from_file(str(REPO / "pages" / page), default_timeout=60).run()


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def test_shared_home_refuses_a_data_root_outside_the_admin_one(data_root, outside, monkeypatch):
    monkeypatch.setenv("SLICEWISE_SHARED", "1")
    at = _run("home.py")
    assert not at.exception
    at.text_input(key="home_data_root").set_value(str(outside)).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and "outside" in errors[0] and str(outside) in errors[0]
    assert at.session_state["data_root"] == str(data_root.resolve())  # unchanged
    (data_root / "sub").mkdir()
    at.text_input(key="home_data_root").set_value(str(data_root / "sub")).run()
    assert not at.error and at.session_state["data_root"] == str((data_root / "sub").resolve())


def test_shared_home_refuses_dotdot_and_symlink_escapes(data_root, outside, monkeypatch):
    monkeypatch.setenv("SLICEWISE_SHARED", "1")
    os.symlink(outside, data_root / "escape")
    at = _run("home.py")
    for typed in (f"{data_root}/../outside", str(data_root / "escape"), "/etc"):
        at.text_input(key="home_data_root").set_value(typed).run()
        assert not at.exception
        assert any("outside" in e.value for e in at.error), typed
        assert at.session_state["data_root"] == str(data_root.resolve())


def test_home_on_loopback_may_choose_any_folder(data_root, outside, monkeypatch):
    monkeypatch.delenv("SLICEWISE_SHARED", raising=False)
    at = _run("home.py")
    at.text_input(key="home_data_root").set_value(str(outside)).run()
    assert not at.exception and not at.error
    assert at.session_state["data_root"] == str(outside.resolve())


def _store_with_a_row() -> None:
    store = BoxStore(os.environ["SLICEWISE_ANNOTATIONS"])
    store.upsert("1.2.3", 0.1, 0.1, 0.5, 0.5, volume="v", slice=0, annotator="me")


def test_annotations_page_refuses_export_outside(data_root, outside):
    _store_with_a_row()
    at = _run("review.py")
    assert not at.exception
    at.text_input(key="review_export_dir").set_value(str(outside / "export")).run()
    at.button(key="review_export").click().run()
    assert not at.exception
    assert any("outside" in e.value and str(outside / "export") in e.value for e in at.error)
    assert not (outside / "export").exists()
    at.text_input(key="review_export_dir").set_value(str(data_root / "export")).run()
    at.button(key="review_export").click().run()
    assert not at.exception and (data_root / "export" / "lung_bbox.csv").is_file()


def test_annotations_page_refuses_prepare_outside(data_root, outside):
    _store_with_a_row()
    at = _run("review.py")
    at.text_input(key="review_prepare_dir").set_value(str(outside / "prepared")).run()
    at.button(key="review_prepare").click().run()
    assert not at.exception
    assert any("outside" in e.value for e in at.error)
    assert not (outside / "prepared").exists()


@pytest.mark.parametrize("error", ["slicewise", "unexpected"])
def test_a_page_error_is_one_line_without_a_traceback(data_root, monkeypatch, tmp_path, error):
    """app.py's guard: a SlicewiseError shows its one-line message; anything else a plain sentence,
    the traceback going to <runs root>/logs/app.log, never to the page."""
    import core.catalog
    from core.errors import SlicewiseError

    def broken(*args, **kwargs):
        if error == "slicewise":
            raise SlicewiseError("/data/x.nii: cannot be read (disk on fire)\nsecond line")
        raise RuntimeError("boom in /srv/secret/internal.py")

    monkeypatch.setattr(core.catalog, "summarise", broken)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1
    text = at.error[0].value
    assert "\n" not in text and "Traceback" not in text
    if error == "slicewise":
        assert text == "/data/x.nii: cannot be read (disk on fire)"
    else:
        assert "/srv/secret" not in text and "RuntimeError" in text
        log = tmp_path / "runs" / "logs" / "app.log"
        assert "boom in /srv/secret/internal.py" in log.read_text()


def test_train_page_refuses_a_path_setting_outside(data_root, outside):
    """weights_path / cache_dir / annotations_csv typed in the settings form: only under the data or
    runs root (weights also in torchvision's cache); refused naming the setting before Start (the
    data-set note checks the chosen settings, Start is disabled), no job started."""
    from core import jobs
    from tests.test_jobs import write_tiny_prepared

    write_tiny_prepared(data_root / "lung_prepared")
    (outside / "weights.pth").write_bytes(b"not weights")
    at = _run("train.py")
    at.radio(key="train_preset_lung_localizer").set_value("reference").run()
    field = at.text_input(key="train_set_lung_localizer_reference_weights_path")
    field.set_value(str(data_root / ".." / "outside" / "weights.pth")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("setting weights_path" in e and "outside the folders" in e for e in errors), errors
    assert at.button(key="train_start_lung_localizer").disabled
    assert jobs.list_jobs() == []


def test_train_page_refuses_a_typed_data_folder_outside(data_root, outside):
    """With no suitable folder under the data root the page asks for a folder: one outside is refused
    before anything is listed in it, and Start stays disabled."""
    (outside / "train").mkdir()
    at = _run("train.py")
    at.selectbox(key="train_family").set_value("xray_classifier").run()
    at.text_input(key="train_data_path_xray_classifier").set_value(str(outside)).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith(f"{outside}: outside the folders") for e in errors), errors
    assert at.button(key="train_start_xray_classifier").disabled
