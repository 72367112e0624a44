"""The data root every page uses, and volumes cached by (path, mtime). Cached objects are never mutated."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core import settings
from core.volume import Volume

DATA_ROOT_KEY = "data_root"


def data_root() -> Path:
    """The data root chosen on the Home page (session state), else core.settings.data_root()."""
    chosen = st.session_state.get(DATA_ROOT_KEY)
    return Path(chosen).expanduser() if chosen else settings.data_root()


def set_data_root(path: str | Path) -> None:
    st.session_state[DATA_ROOT_KEY] = str(Path(path).expanduser())


def path_mtime(path: str | Path) -> float:
    """Newest modification time of a file, or of a folder and the files directly in it."""
    p = Path(path)
    newest = p.stat().st_mtime
    if p.is_dir():
        with os.scandir(p) as entries:
            for entry in entries:
                if entry.is_file():
                    newest = max(newest, entry.stat().st_mtime)
    return newest


@st.cache_resource(max_entries=2, show_spinner="Loading volume…")
def _load(path: str, mtime: float) -> Volume:
    from core.io import load_volume

    return load_volume(path)


def load_volume_cached(path: str | Path) -> Volume:
    """core.io.load_volume, cached by (path, mtime). Raises core's SlicewiseError subclasses."""
    return _load(str(Path(path).resolve()), path_mtime(path))


@st.cache_resource(max_entries=2, show_spinner=False)
def _truth(path: str, mtime: float, _volume: Volume):
    from core.demo import truth_for

    return truth_for(_volume)


def truth_cached(path: str | Path, volume: Volume):
    """Ground truth (core.demo.truth_for) of a demo volume, or None."""
    return _truth(str(Path(path).resolve()), path_mtime(path), volume)


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def list_volumes_cached(root: str):
    """core.catalog.list_volumes, refreshed every minute (walking a data root costs ~0.4 s, too
    much for every rerun of a page); Home clears it when it writes data."""
    from core.catalog import list_volumes

    return list_volumes(Path(root))
