"""Rendered frames of a stack (volume x orientation x window x overlays), PNG-encoded lazily and cached.

The viewer needs the start slice at once and the rest soon after, so frames are encoded on demand:
one slice alone (`_slice_png`) for the first paint, and runs of CHUNK slices (`_chunk_pngs`) for the
rest. Chunks are cached per stack, so reopening a stack on another slice re-encodes nothing, and a
page run interrupted by a rerun loses at most the chunk it was encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import streamlit as st

from core import render
from core.render import OverlayLayer
from core.volume import Volume
from pages._ui.slice_viewer import encode_frames, encode_png, stack_id

CHUNK = 8  # slices per cached run of frames (~1 MB of PNG at 512x512)


def layers_key(layers: Sequence[OverlayLayer]) -> tuple:
    return tuple(layer.signature() for layer in layers if layer.visible and layer.opacity > 0)


def _render(volume: Volume, orientation: str, index: int, window: tuple[float, float],
            layers: tuple[OverlayLayer, ...]):
    # grey frames when there is nothing to draw over them: smaller PNGs, faster to encode
    return render.render_frame(volume.array, orientation, index, window, layers, volume.direction)


@st.cache_resource(max_entries=16, show_spinner=False)
def _slice_png(path: str, mtime: float, orientation: str, window: tuple[float, float], key: tuple,
               index: int, _volume: Volume, _layers: tuple[OverlayLayer, ...]) -> bytes:
    return encode_png(_render(_volume, orientation, index, window, _layers))


@st.cache_resource(max_entries=128, show_spinner=False)  # 128 x 8 slices: ~4 axial CT stacks
def _chunk_pngs(path: str, mtime: float, orientation: str, window: tuple[float, float], key: tuple,
                chunk: int, _volume: Volume, _layers: tuple[OverlayLayer, ...]) -> tuple[bytes, ...]:
    stop = min(render.slice_count(_volume.shape, orientation), (chunk + 1) * CHUNK)
    images = [_render(_volume, orientation, i, window, _layers) for i in range(chunk * CHUNK, stop)]
    return tuple(encode_frames(images))


@dataclass(frozen=True)
class StackFrames:
    """The PNG frames of one stack, encoded on demand (a slice_viewer.FrameSource)."""

    path: str
    mtime: float
    orientation: str
    window: tuple[float, float]
    key: tuple
    volume: Volume = field(repr=False, compare=False)
    layers: tuple[OverlayLayer, ...] = field(repr=False, compare=False)
    chunk: ClassVar[int] = CHUNK

    @property
    def stack(self) -> str:
        return stack_id((self.path, self.mtime, self.orientation, self.window, self.key))

    @property
    def count(self) -> int:
        return render.slice_count(self.volume.shape, self.orientation)

    def frames(self, indices: Sequence[int]) -> list[bytes]:
        """PNG bytes of the slices `indices`, in that order. One slice alone is encoded by itself
        (the first paint waits for nothing else); more go through the cached chunks."""
        args = (self.path, self.mtime, self.orientation, self.window, self.key)
        if len(indices) == 1:
            return [_slice_png(*args, int(indices[0]), self.volume, self.layers)]
        wanted = sorted({int(i) // CHUNK for i in indices})
        chunks = {c: _chunk_pngs(*args, c, self.volume, self.layers) for c in wanted}
        return [chunks[i // CHUNK][i % CHUNK] for i in indices]


def stack_frames(path: str, mtime: float, volume: Volume, orientation: str, window: tuple[float, float],
                 layers: Sequence[OverlayLayer]) -> StackFrames:
    """The frames of a stack for the client-side viewer; nothing is encoded until asked for."""
    visible = tuple(layer for layer in layers if layer.visible and layer.opacity > 0)
    return StackFrames(path, mtime, orientation, (float(window[0]), float(window[1])), layers_key(visible),
                       volume, visible)


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
