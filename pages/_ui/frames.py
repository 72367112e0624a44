"""What the Viewer sends the browser for one volume (pages._ui.slice_viewer.ViewSource), and the montage.

The browser gets raw slices and layers, not rendered frames (core.view_payload decides the bytes), so
nothing here depends on the window or on the layers' look: a window or opacity change encodes
nothing. The feed payloads (axial slices in runs of CHUNK, nearest the opening slice first) are
encoded one at a time when the page sends them and not kept: Streamlit copies a payload into its
message (and again to hash and to send it), so a cached copy of every feed held the compressed
volume twice over while the run that sends them peaked (memory, not time: the feeds leave on the
runs before the browser reports it holds every slice, normally one; the bytes are deterministic, so
a rerun's payload has the same hash and the browser gets a reference). The opening slice alone is
encoded on each run (a few ms). Layer payloads are cached per layer data (layers are cached by the
pages and never mutated).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import streamlit as st
from PIL import Image

from core import render, view_payload
from core.render import OverlayLayer
from core.view_payload import IntensityCoding
from core.volume import Volume
from pages._ui.slice_viewer import stack_id

CHUNK = 8  # axial slices per run in the feeds (~1.7 MB at 512x512 CT)
FEED_CHUNKS = 1  # runs per feed payload (~1.7 MB at 512x512 CT), nearest the opening slice first: Streamlit
# copies a payload several times while it sends it (proto, hash, websocket) while the next one is
# encoded, so the server's peak grows with the payload size (LIDC-IDRI-0001, two runs each: two runs
# per payload peaked ~25 MiB higher than one)


@st.cache_resource(max_entries=4, show_spinner=False)
def _coding(path: str, mtime: float, _volume: Volume) -> IntensityCoding:
    return view_payload.intensity_coding(_volume.array)


def _version(layer: OverlayLayer) -> str:
    """Layer data are cached by the pages and never mutated: a new object is a new version."""
    return str(id(layer.data))


@st.cache_resource(max_entries=16, show_spinner=False)
def _layer_payload(key: str, name: str, kind: str, data_id: int, _layer: OverlayLayer) -> bytes:
    header = {"volume": key, "kind": "layer", "id": view_payload.layer_id(name, _version(_layer))}
    return view_payload.pack(header, [view_payload.layer_blob(_layer)])


def _drawable(layers: Mapping[str, OverlayLayer], shape) -> tuple[dict[str, OverlayLayer], list[str]]:
    kept, problems = {}, []
    for name, layer in layers.items():
        problem = view_payload.check_layer(name, layer, shape)
        if problem:
            problems.append(problem)
        else:
            kept[name] = layer
    return kept, problems


@dataclass(frozen=True)
class VolumeView:
    """A volume's raw slices and overlay layers for the browser viewer, encoded on demand."""

    path: str
    mtime: float
    volume: Volume = field(repr=False, compare=False)
    layers: Mapping[str, OverlayLayer] = field(repr=False, compare=False)

    @property
    def volume_key(self) -> str:
        return stack_id((self.path, self.mtime, self.volume.shape))

    @property
    def count(self) -> int:
        return int(self.volume.shape[0])

    @property
    def coding(self) -> IntensityCoding:
        return _coding(self.path, self.mtime, self.volume)

    def header(self, orientation: str) -> dict:
        v = self.volume
        coding = self.coding
        presets = view_payload.window_presets(v.modality)
        window = _opening_window(self.path, self.mtime, v)
        return {"volume": self.volume_key, "shape": [int(s) for s in v.shape], "coding": coding.header(),
                "range": coding.value_range, "drag_pixels": view_payload.DRAG_PIXELS,
                "unit": "HU" if v.modality == "CT" else "",
                "aspect": render.display_aspect(v.spacing, orientation),
                "flip": render.flips_vertically(orientation, v.direction),
                "window": list(window), "colormaps": list(view_payload.COLORMAPS),
                "presets": [{"name": k, "center": c, "width": w} for k, (c, w) in presets.items()],
                "layers": [view_payload.layer_header(name, layer, _version(layer))
                           for name, layer in self.layers.items()]}

    def slices(self, indices: Sequence[int]) -> list[bytes]:
        """Encoded axial slices `indices`, in that order (the opening slice: a few ms)."""
        return view_payload.encode_slices(self.volume.array, [int(i) for i in indices], self.coding)

    @property
    def feed_count(self) -> int:
        return -(-self.count // (CHUNK * FEED_CHUNKS))

    def feed_payload(self, start: int, slot: int) -> bytes:
        """Feed payload `slot` (< feed_count): its axial slices (every slice but `start` over all the
        slots, nearest `start` first), encoded now and not kept (see the module docstring)."""
        plan = view_payload.feed_plan(self.count, int(start), CHUNK, (FEED_CHUNKS,) * self.feed_count)
        indices = plan[slot]
        header = {"volume": self.volume_key, "kind": "slices", "indices": indices}
        return view_payload.pack(header, view_payload.encode_slices(self.volume.array, indices, self.coding))

    def layer_payloads(self) -> list[tuple[str, bytes]]:
        """(layer id, payload) of each mask and heatmap layer (boxes travel in the viewer's header)."""
        return [(view_payload.layer_id(name, _version(layer)),
                 _layer_payload(self.volume_key, name, layer.kind, id(layer.data), layer))
                for name, layer in self.layers.items() if layer.kind != "boxes"]


@st.cache_resource(max_entries=4, show_spinner=False)
def _opening_window_cached(path: str, mtime: float, _volume: Volume) -> tuple[float, float]:
    return view_payload.initial_window(_volume.array, _volume.modality)


def _opening_window(path: str, mtime: float, volume: Volume) -> tuple[float, float]:
    c, w = _opening_window_cached(path, mtime, volume)
    return float(c), float(w)


def volume_view(path: str, mtime: float, volume: Volume,
                layers: Mapping[str, OverlayLayer]) -> tuple[VolumeView, list[str]]:
    """The browser's view of a volume with every drawable layer; problems for layers that do not fit."""
    kept, problems = _drawable(layers, volume.shape)
    return VolumeView(path, mtime, volume, kept), problems


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 grey (y, x) or RGB (y, x, 3) -> PNG bytes; level 1 is ~3x faster than the default."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def layers_key(layers: Sequence[OverlayLayer]) -> tuple:
    return tuple(layer.signature() for layer in layers if layer.visible and layer.opacity > 0)


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
