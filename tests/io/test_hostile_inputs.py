"""Every malformed or hostile input is a SlicewiseError naming the file, fast, and bounded in memory.

The corpus (tests/io/hostile.py) is built here; one worker process runs it (tests/io/hostile_worker.py)
so that peak RSS can be measured with resource.getrusage and a hang shows as a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.io.writers import write_dicom_series, write_nifti, write_nrrd, write_png
from tests.io.hostile import build_corpus

ROOT = Path(__file__).resolve().parents[2]
RSS_LIMIT_MB = 100
SECONDS_LIMIT = 3.0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    cases = build_corpus(base / "corpus")
    warm = base / "warm"
    warm.mkdir()
    small = np.zeros((4, 6, 6), np.int16)
    write_nifti(small.astype(np.float32), warm / "w.nii.gz")
    write_nrrd(small.astype(np.float32), warm / "w.nrrd")
    write_png(np.zeros((6, 6), np.uint8), warm / "w.png")
    write_dicom_series(small, warm / "series")
    warm_paths = [str(warm / "w.nii.gz"), str(warm / "w.nrrd"), str(warm / "w.png"), str(warm / "series")]
    payload = json.dumps([warm_paths] + [[n, str(p), op] for n, p, op in cases])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-m", "tests.io.hostile_worker"], input=payload, cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=240)
        out = done.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    got = {r["name"]: r for r in map(json.loads, out.splitlines())}
    return cases, got




def test_every_case_ran_and_none_hung(results):
    cases, got = results
    missing = [name for name, _, _ in cases if name not in got]
    assert not missing, f"worker stopped (a hang or a crash) at: {missing[:3]}"
    assert len(cases) >= 40


def test_every_load_is_a_slicewise_error_naming_the_file(results):
    cases, got = results
    bad = []
    for name, _path, op in cases:
        r = got.get(name)
        if r is None or op != "load":
            continue
        if r["error"] in (None, "HANG") or r["error"].startswith("RAW") or not r.get("named"):
            bad.append((name, r["error"], r.get("message")))
    assert not bad, bad


def test_listing_skips_what_is_not_a_regular_file(results):
    cases, got = results
    for name, _path, op in cases:
        r = got[name]
        if op == "find":
            assert r["error"] is None, (name, r)
        if op == "find_error":
            assert r["error"] not in (None, "HANG") and not r["error"].startswith("RAW") and r["named"], r
    assert got["find_volumes over FIFOs, devices and loops"]["found"] == 0


def test_each_case_is_fast_and_bounded_in_memory(results):
    cases, got = results
    slow = [(n, got[n]["seconds"]) for n, _, _ in cases if got[n]["seconds"] > SECONDS_LIMIT]
    heavy = [(n, got[n]["rss_growth_mb"]) for n, _, _ in cases if got[n]["rss_growth_mb"] > RSS_LIMIT_MB]
    assert not slow, slow
    assert not heavy, heavy
    sizes = [p.stat().st_size for _, p, _ in cases if p.is_file() and not p.is_symlink()]
    assert max(sizes) < 1024 * 1024  # every file of the corpus is under 1 MB


def test_specific_messages(results):
    _, got = results
    assert "/etc/passwd" in got["nhdr data file /etc/passwd"]["message"]
    assert "outside" in got["nhdr data file /etc/passwd"]["message"]
    assert "FIFO" in got["FIFO named .dcm"]["message"]
    assert "loop" in got["symlink loop"]["message"]
    assert "limit" in got["nifti declares over 4 GiB"]["message"]
    assert "megapixels" in got["png 10000 x 10000 of zeros (~100 KB)"]["message"]
    assert "RescaleSlope" in got["dicom RescaleSlope 1e38"]["message"]
    assert "PixelData holds" in got["dicom PixelData three times too long"]["message"]


def test_unreadable_folder_is_a_named_error(tmp_path):
    """PermissionError while listing: run as an unprivileged user (root reads everything)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="slicewise-perm-"))
    try:
        os.chmod(base, 0o755)
        locked = base / "locked"
        locked.mkdir()
        (locked / "a.dcm").write_bytes(b"x")
        os.chmod(locked, 0o000)
        code = ("import os, sys; from core.io import find_volumes, load_volume\n"
                "from core.errors import SlicewiseError\n"
                "if os.geteuid() == 0:\n    os.setgid(65534); os.setuid(65534)\n"
                "for f in (find_volumes, load_volume):\n"
                "    try:\n        f(sys.argv[1]); print('NO ERROR')\n"
                "    except SlicewiseError as e:\n"
                "        print('OK' if sys.argv[1] in str(e) else 'UNNAMED', e)\n")
        if os.geteuid() != 0 and os.access(locked, os.R_OK):
            pytest.skip("this user can read a mode-000 folder; PermissionError not testable")
        done = subprocess.run([sys.executable, "-c", code, str(locked)], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = done.stdout.splitlines()
        assert len(lines) == 2 and all(line.startswith("OK") for line in lines), done.stdout + done.stderr
    finally:
        os.chmod(base / "locked", 0o755)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
