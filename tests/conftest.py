"""Shared fixtures. Keep them small: real files written by the real writers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Tests never touch the user's data/, runs/ or annotations/.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty data root, runs dir and annotation path, wired through the environment."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("SLICEWISE_DATA", str(root))
    monkeypatch.setenv("SLICEWISE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SLICEWISE_ANNOTATIONS", str(tmp_path / "annotations" / "lung_bbox.csv"))
    return root


def pids_where(match) -> list[int]:
    """Pids of the running processes whose argument list (bytes, split at NULs) `match` accepts."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(args):
            found.append(int(proc.name))
    return found


@contextmanager
def scratch(tmp_path_factory, name: str) -> Iterator[Path]:
    """A folder for a module-scoped fixture, removed when the fixture ends.

    Checkpoints are ~140 MB each; kept to the end of the session they filled a CI disk (the suite wrote
    7 GB). Passing tests' own tmp_path folders go at once too (tmp_path_retention_policy in pyproject).
    """
    path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# tests.toy_family registers itself when imported: only inside this fixture, never at collection,
# so that no other test sees a sixth family.
@pytest.fixture
def toy_env(monkeypatch, tmp_path):
    import sys

    import core.models

    monkeypatch.setenv("SLICEWISE_FAMILY_MODULES", "tests.toy_family")
    data = tmp_path / "data" / "toy_set"
    data.mkdir(parents=True)
    (data / "toy.json").write_text("{}")
    yield tmp_path
    # the registry is process-wide: leave it as the other tests expect it
    core.models._REGISTRY.pop("toy_blobs", None)
    core.models._PLUGINS.discard("tests.toy_family")
    sys.modules.pop("tests.toy_family", None)
