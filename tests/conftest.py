"""Shared fixtures. Keep them small: real files written by the real writers."""

from __future__ import annotations

import os

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
