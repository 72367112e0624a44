"""Uploads live under the runs root, one folder per session, and go after a day."""

from __future__ import annotations

import os
import time

from core import uploads


def test_an_upload_stays_under_the_runs_root_whatever_its_name(tmp_path):
    path = uploads.save_upload(tmp_path, "sess/../1", "file-1", "../../etc/passwd", b"data")
    assert path.is_file() and path.read_bytes() == b"data"
    assert path.resolve().is_relative_to((tmp_path / "uploads").resolve())
    assert path.name == "passwd"


def test_old_session_folders_are_pruned_and_a_session_can_be_removed(tmp_path):
    old = uploads.save_upload(tmp_path, "old", "u", "a.png", b"x")
    new = uploads.save_upload(tmp_path, "new", "u", "b.png", b"y")
    day_ago = time.time() - 2 * uploads.MAX_AGE_S
    for p in (old, old.parent, old.parent.parent):
        os.utime(p, (day_ago, day_ago))
    assert uploads.prune(tmp_path) == 1
    assert not old.exists() and new.exists()
    uploads.remove_session(tmp_path, "new")
    assert not new.exists()
