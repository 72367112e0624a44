"""Rendered frames of a stack (volume x orientation x window x overlays), cached per stack."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from core import render
from core.render import OverlayLayer
from core.volume import Volume
from pages._ui.slice_viewer import encode_frames, encode_png, stack_id


def layers_key(layers: Sequence[OverlayLayer]) -> tuple:
    return tuple(layer.signature() for layer in layers if layer.visible and layer.opacity > 0)


@st.cache_resource(max_entries=4, show_spinner="Rendering slices…")
def _frames(path: str, mtime: float, orientation: str, window: tuple[float, float], key: tuple,
            _volume: Volume, _layers: tuple[OverlayLayer, ...]) -> tuple[bytes, ...]:
    n = render.slice_count(_volume.shape, orientation)
    images = []
    for i in range(n):
        rgb = render.render_slice(_volume.array, orientation, i, window, _layers, _volume.direction)
        images.append(rgb if _layers else rgb[..., 0])  # grey PNGs are smaller and faster
    return tuple(encode_frames(images))


@st.cache_resource(max_entries=4, show_spinner=False)
def _montage_png(path: str, mtime: float, orientation: str, window: tuple[float, float], key: tuple,
                 rows: int, cols: int, _volume: Volume,
                 _layers: tuple[OverlayLayer, ...]) -> tuple[bytes, list[int]]:
    grid, indices = render.render_montage(_volume.array, orientation, window, rows, cols, _layers,
                                          _volume.spacing, _volume.direction, max_tile=128)
    return encode_png(grid), indices


def montage_png(path: str, mtime: float, volume: Volume, orientation: str, window: tuple[float, float],
                layers: Sequence[OverlayLayer], rows: int, cols: int) -> tuple[bytes, list[int]]:
    """A rows x cols montage (tiles at most 128 px wide) as PNG bytes, and the slice indices shown."""
    visible = tuple(layer for layer in layers if layer.visible and layer.opacity > 0)
    return _montage_png(path, mtime, orientation, (float(window[0]), float(window[1])), layers_key(visible),
                        rows, cols, volume, visible)


def stack_frames(path: str, mtime: float, volume: Volume, orientation: str, window: tuple[float, float],
                 layers: Sequence[OverlayLayer]) -> tuple[tuple[bytes, ...], str]:
    """(PNG per slice, stack id) for the client-side viewer."""
    visible = tuple(layer for layer in layers if layer.visible and layer.opacity > 0)
    key = layers_key(visible)
    frames = _frames(path, mtime, orientation, (float(window[0]), float(window[1])), key, volume, visible)
    return frames, stack_id((path, mtime, orientation, window, key))
