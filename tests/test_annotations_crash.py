"""The CSV and its change log commit as one unit: writers killed at any point (including between
the CSV rename and the log's commit marker), and a full disk, leave a store whose `history()`
replays to exactly the rows of the CSV; a failed call changes nothing and names the file."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from core.annotations import AnnotationIOError, BoxStore, _format_row, parse_csv_text
from core.errors import SlicewiseError

ROOT = Path(__file__).resolve().parents[1]

# A writer that upserts forever; KILL_AT names a stage at which it SIGKILLs itself on write n.
WRITER = textwrap.dedent("""
    import os, signal, sys
    from core import annotations as a
    path, kill_at, kill_on = sys.argv[1], sys.argv[2], int(sys.argv[3])
    count = {"n": 0}
    def die(stage):
        if kill_at == stage and count["n"] == kill_on:
            os.kill(os.getpid(), signal.SIGKILL)
    orig_write, orig_log = a.BoxStore._write_rows, a.BoxStore._append_log
    def write_rows(self, rows):
        die("before_rename")
        orig_write(self, rows)
        die("after_rename")
    def append_log(self, entries, *args, **kwargs):
        if entries and "commit" in entries[0] and "action" not in entries[0]:
            die("before_marker")
        elif kill_at == "torn_log" and count["n"] == kill_on:
            with open(self.log_path, "ab") as h:
                h.write(b'{"time": "x", "batch": "torn", "pend')
                h.flush()
            die("torn_log")
        orig_log(self, entries, *args, **kwargs)
    a.BoxStore._write_rows, a.BoxStore._append_log = write_rows, append_log
    store = a.BoxStore(path)
    print("ready", flush=True)
    i = 0
    while True:
        count["n"] = i
        if i == kill_on:
            store.upsert("KILLED", 0.2, 0.2, 0.4, 0.4, volume="v", slice=77, annotator="w")
        elif i % 5 == 4:
            store.delete(f"s{(i * 7) % 40}", annotator="w")
        elif i % 11 == 10:
            store.upsert_many([{"Image": f"s{(i + k) % 40}", "Xmin": 0.1, "Ymin": 0.1, "Xmax": 0.5,
                                "Ymax": 0.6 + 0.01 * k, "Volume": "v", "Slice": (i + k) % 40}
                               for k in range(4)], annotator="batch")
        elif i % 13 == 12:
            store.undo(annotator="w")
        else:
            store.upsert(f"s{i % 40}", 0.1, 0.1, 0.2 + (i % 7) * 0.1, 0.9, volume="v", slice=i % 40,
                         annotator="w")
        i += 1
""")


def _spawn(path: Path, kill_at: str = "none", kill_on: int = -1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), kill_at, str(kill_on)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _replay(history: list[dict]) -> dict[str, list[str]]:
    state: dict[str, dict] = {}
    for entry in history:
        if entry["new"] is None:
            state.pop(entry["image"], None)
        else:
            state[entry["image"]] = entry["new"]
    return {k: _format_row(v) for k, v in state.items()}


def assert_consistent(path: Path) -> dict:
    """CSV parses, history() replays to exactly its rows, and the log holds no unresolved entry."""
    store = BoxStore(path)  # opening repairs the log when no writer holds the lock
    rows = parse_csv_text(path.read_text(), path) if path.exists() else {}
    assert _replay(store.history()) == {k: _format_row(v) for k, v in rows.items()}
    if store.log_path.exists():
        text = store.log_path.read_text()
        assert text == "" or text.endswith("\n")
        lines = [json.loads(line) for line in text.splitlines()]
        markers = {e["commit"] for e in lines if "commit" in e and "action" not in e}
        assert all(e["batch"] in markers for e in lines if e.get("pending"))
    return rows


@pytest.mark.parametrize("stage", ["before_rename", "after_rename", "before_marker", "torn_log"])
def test_writer_killed_at_each_stage_leaves_csv_and_log_in_agreement(tmp_path, stage):
    path = tmp_path / "lung_bbox.csv"
    proc = _spawn(path, stage, kill_on=23)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    rows = assert_consistent(path)
    history = BoxStore(path).history()
    assert len(history) > 20
    # killed before the rename: the change is in neither; after it: in both
    landed = stage in ("after_rename", "before_marker")
    assert ("KILLED" in rows) is landed
    assert any(e["image"] == "KILLED" for e in history) is landed
    # the store keeps working and stays consistent
    BoxStore(path).upsert("after", 0.1, 0.1, 0.5, 0.5, volume="v", slice=99, annotator="me")
    assert "after" in assert_consistent(path)


def test_writers_killed_at_random_moments_lose_nothing(tmp_path):
    path = tmp_path / "lung_bbox.csv"
    rng = random.Random(8)
    seen_batches = 0
    for _ in range(8):
        proc = _spawn(path)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert_consistent(path)
        batches = len({e["batch"] for e in BoxStore(path).history()})
        assert batches >= seen_batches  # nothing committed before was lost
        seen_batches = batches
    assert seen_batches > 20
    BoxStore(path).upsert("after", 0.1, 0.1, 0.5, 0.5, volume="v", slice=99, annotator="me")
    assert_consistent(path)
    assert not list(tmp_path.glob(".*.tmp"))  # the next write removes a killed writer's temp file


def test_history_sees_a_change_the_csv_shows_before_any_repair(tmp_path):
    path = tmp_path / "lung_bbox.csv"
    store = BoxStore(path)
    store.upsert("a", 0.1, 0.1, 0.5, 0.5, volume="v", slice=0, annotator="me")
    # simulate a crash between the CSV rename and the commit marker: drop the marker
    lines = store.log_path.read_text().splitlines(keepends=True)
    store.log_path.write_text("".join(lines[:-1]))
    with store._acquire():  # a writer holds the lock: no repair on open, history resolves read-only
        assert [e["image"] for e in BoxStore(path).history()] == ["a"]
    BoxStore(path)  # lock free: the open repairs (writes the marker)
    assert '"commit"' in store.log_path.read_text().splitlines()[-1]


# ------------------------------------------------------------------- a full disk
@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a 64 KiB tmpfs needs root; run as root (or in a container) to test ENOSPC")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): ENOSPC not testable")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_is_a_named_error_and_a_failed_call_changes_nothing(tiny_disk):
    path = tiny_disk / "lung_bbox.csv"
    store = BoxStore(path)
    failures = successes = 0
    for i in range(400):
        before_csv = path.read_bytes() if path.exists() else None
        before_log = store.log_path.read_bytes() if store.log_path.exists() else None
        boxes = [{"Image": f"s{i}-{k}-{uuid.uuid4().hex}", "Xmin": 0.1, "Ymin": 0.1, "Xmax": 0.5,
                  "Ymax": 0.9, "Volume": "v", "Slice": k} for k in range(40 if i % 3 == 0 else 1)]
        try:
            store.upsert_many(boxes, annotator="filler")
            successes += 1
        except AnnotationIOError as exc:
            failures += 1
            assert str(path) in str(exc) and "No space left" in str(exc)
            assert (path.read_bytes() if path.exists() else None) == before_csv
            assert (store.log_path.read_bytes() if store.log_path.exists() else None) == before_log
        except SlicewiseError as exc:  # pragma: no cover - any other named failure is a bug here
            pytest.fail(f"unexpected {exc!r}")
        if failures >= 10:
            break
    assert successes > 0 and failures >= 10
    rows = assert_consistent(path)
    assert len(rows) >= successes  # every successful call is in the CSV
    # more space lets the store work again
    subprocess.run(["mount", "-o", "remount,size=1m", str(tiny_disk)], check=True)
    store.delete(next(iter(rows)), annotator="me")
    assert_consistent(path)
