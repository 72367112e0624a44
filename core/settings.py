"""Where things live at run time: data root, runs, the annotation file."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """`SLICEWISE_DATA` or `data/` in the checkout."""
    return Path(os.environ.get("SLICEWISE_DATA") or REPO_ROOT / "data").expanduser()


def runs_root() -> Path:
    """`SLICEWISE_RUNS` or `runs/` in the checkout."""
    return Path(os.environ.get("SLICEWISE_RUNS") or REPO_ROOT / "runs").expanduser()


def annotations_path() -> Path:
    """`SLICEWISE_ANNOTATIONS` or `annotations/lung_bbox.csv` in the checkout."""
    default = REPO_ROOT / "annotations" / "lung_bbox.csv"
    return Path(os.environ.get("SLICEWISE_ANNOTATIONS") or default).expanduser()
