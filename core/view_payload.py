"""What the browser slice viewer receives: the image in modality units once, each overlay layer apart.

The browser composites (windowing, layer toggles, opacity, fill/contour, colour map) itself, so a
window or an opacity change costs no server work and no bytes. This module makes the encoding
decisions, with no Streamlit:

- Intensity: the volume as uint16 `raw` with `value = raw * slope + intercept` (modality units).
  Integer data whose range fits 16 bits (CT in HU, most MR) is exact (`slope` 1); other data is
  quantised to 65,536 levels of its range. (Integrality is checked on ~16 evenly spaced slices: a
  float volume whose non-integer values hide in the other slices would read rounded to 1 unit.)
  Each axial slice is one blob: its low bytes, then its
  high bytes (byte planes deflate ~30 % smaller than interleaved int16), zlib-compressed
  (the browser's `DecompressionStream("deflate")` reads it).
- Layers: masks as uint8 labels, heatmaps as uint8 0-255 (value / 255 in [0, 1]), each a whole
  (z, y, x) zlib blob; boxes as vectors in the header (axial slices only).
- Window maths: the presets a modality offers, the window a volume opens with, and the right-drag
  rule (horizontal: width, vertical: center, as in OHIF and 3D Slicer), which the JavaScript mirrors.

A payload is b"SWV2", a uint32 LE header length, a JSON header with `sizes`, then the blobs.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.render import OverlayLayer
from core.windowing import MODEL_PRESETS, PRESETS, auto_window

MAGIC = b"SWV2"
LEVEL = 1  # zlib level: ~3x faster than the default for a few % more bytes
INTERNAL_PRESETS = tuple(sorted(MODEL_PRESETS))  # model input windows, not for reading
COLORMAPS = ("jet", "hot", "grey")
DRAG_PIXELS = 500  # a drag across this many screen pixels changes the window by the value range


@dataclass(frozen=True)
class IntensityCoding:
    """value = raw * slope + intercept, raw uint16."""

    slope: float
    intercept: float
    low: float = 0.0  # the finite value range (for the drag step)
    high: float = 0.0
    finite: bool = True  # no NaN or infinity anywhere

    @property
    def value_range(self) -> float:
        return float(self.high - self.low)

    @property
    def exact(self) -> bool:
        return self.slope == 1.0 and float(self.intercept).is_integer()

    def header(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept, "exact": self.exact}


def _finite_range(array: np.ndarray) -> tuple[float, float, bool]:
    """(lowest, highest) finite value and whether every value is finite."""
    lo, hi = float(np.min(array)), float(np.max(array))  # one fast pass when every value is finite
    if np.isfinite(lo) and np.isfinite(hi):
        return lo, hi, True
    lo, hi = np.inf, -np.inf
    for plane in array:  # slice by slice: no volume-sized temporaries
        finite = plane[np.isfinite(plane)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (0.0, 0.0, False) if lo > hi else (lo, hi, False)


def _integral(array: np.ndarray) -> bool:
    if array.dtype.kind in "iub":
        return True
    def whole(plane: np.ndarray) -> bool:
        rounded = np.rint(plane)
        same = rounded == plane
        if same.all():
            return True
        return bool(np.all(same | ~np.isfinite(plane)))  # NaN != NaN: non-finite values do not count

    step = max(1, len(array) // 16)  # 16 slices or so: non-integer data (MR floats) shows in every one
    return all(whole(plane) for plane in array[::step])


def intensity_coding(array: np.ndarray) -> IntensityCoding:
    """How `array` (z, y, x) travels as uint16: exact when its values are integers spanning <= 65,535."""
    arr = np.asarray(array)
    lo, hi, finite = _finite_range(arr)
    if hi - lo <= 65535 and _integral(arr):
        return IntensityCoding(1.0, float(lo), lo, hi, finite)
    return IntensityCoding(max(hi - lo, 1e-12) / 65535.0, float(lo), lo, hi, finite)


def to_raw(plane: np.ndarray, coding: IntensityCoding) -> np.ndarray:
    """Modality values -> uint16 raw (non-finite values -> 0)."""
    arr = np.asarray(plane)
    if coding.exact and arr.dtype == np.float32 and abs(coding.low) < 2**23 and abs(coding.high) < 2**23:
        values = arr - np.float32(coding.intercept)  # integers: exact in float32, one pass, half the bytes
    else:
        values = (arr.astype(np.float64) - coding.intercept) / coding.slope
    if not coding.finite:
        values[~np.isfinite(values)] = 0
    np.rint(values, out=values)
    np.clip(values, 0, 65535, out=values)
    return values.astype(np.uint16)


def from_raw(raw: np.ndarray, coding: IntensityCoding) -> np.ndarray:
    """uint16 raw -> modality values (float64), what the browser computes."""
    return np.asarray(raw, dtype=np.float64) * coding.slope + coding.intercept


def encode_plane(raw: np.ndarray) -> bytes:
    """uint16 (y, x) -> zlib(low bytes, then high bytes)."""
    u16 = np.ascontiguousarray(raw, dtype="<u2")
    planes = u16.view(np.uint8).reshape(-1, 2).T
    return zlib.compress(np.ascontiguousarray(planes).tobytes(), LEVEL)


def decode_plane(blob: bytes, shape: Sequence[int]) -> np.ndarray:
    """The inverse of `encode_plane` (what the JavaScript does)."""
    data = np.frombuffer(zlib.decompress(blob), np.uint8).reshape(2, -1)
    return (data[0].astype(np.uint16) | (data[1].astype(np.uint16) << 8)).reshape(tuple(shape))


def encode_slices(array: np.ndarray, indices: Sequence[int], coding: IntensityCoding,
                  workers: int = 2) -> list[bytes]:
    """Axial slices `indices` of a (z, y, x) volume -> blobs (zlib releases the GIL: threads help)."""
    def one(i: int) -> bytes:
        return encode_plane(to_raw(array[int(i)], coding))

    if len(indices) <= 1:
        return [one(i) for i in indices]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, indices))


# ------------------------------------------------------------------------------------------- layers

def _as_3d(data: Any) -> np.ndarray:
    arr = np.asarray(data)
    return arr[np.newaxis] if arr.ndim == 2 else arr


def _compress_planes(planes) -> bytes:
    packer = zlib.compressobj(LEVEL)
    parts = [packer.compress(np.ascontiguousarray(p).tobytes()) for p in planes]
    return b"".join([*parts, packer.flush()])


def mask_bytes(data: Any) -> bytes:
    """A mask (z, y, x) or (y, x), non-zero inside -> zlib of uint8 labels (values over 255 clip)."""
    arr = _as_3d(data)
    if arr.dtype == np.uint8:
        return _compress_planes(arr)
    return _compress_planes(np.clip(p, 0, 255).astype(np.uint8) for p in arr)


def heatmap_to_uint8(plane: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 0-255, rounding to nearest (non-finite -> 0); uint8 (already 0-255) as is."""
    if np.asarray(plane).dtype == np.uint8:
        return np.asarray(plane)
    v = np.nan_to_num(np.asarray(plane, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(v, 0, 1) * 255 + 0.5).astype(np.uint8)


def heatmap_bytes(data: Any) -> bytes:
    """A heatmap (z, y, x) or (y, x) in [0, 1] -> zlib of uint8 0-255."""
    return _compress_planes(heatmap_to_uint8(p) for p in _as_3d(data))


def box_rows(data: Any) -> list[list[float]]:
    """Boxes (dict slice -> (xmin, ymin, xmax, ymax), or (z, 4) with NaN rows) -> [[z, x0, y0, x1, y1]]."""
    if data is None:
        return []
    if isinstance(data, Mapping):
        items = [(int(z), box) for z, box in data.items()]
    else:
        arr = np.asarray(data, dtype=float)
        items = list(enumerate(arr)) if arr.ndim == 2 else []
    rows = []
    for z, box in sorted(items, key=lambda item: item[0]):
        values = [float(v) for v in box]
        if len(values) == 4 and all(np.isfinite(values)):
            rows.append([int(z), *values])
    return rows


def layer_id(name: str, version: str = "") -> str:
    """The browser's key of a layer's data: a new version (predicted again) is a new key."""
    return hashlib.sha1(f"{name}\0{version}".encode()).hexdigest()[:12]


def layer_header(name: str, layer: OverlayLayer, version: str = "") -> dict:
    """The look of a layer (the browser's starting state) and, for boxes, the boxes themselves."""
    head = {"id": layer_id(name, version), "name": name, "kind": layer.kind,
            "colour": [int(c) for c in layer.colour],
            "opacity": round(float(layer.opacity), 3), "visible": bool(layer.visible), "style": layer.style,
            "line_width": int(layer.line_width), "threshold": float(layer.threshold)}
    if layer.kind == "boxes":
        head["boxes"] = box_rows(layer.data)
    elif layer.kind == "heatmap":
        head["colormap"] = "jet"
    if layer.kind != "boxes":
        head["shape"] = [int(s) for s in _as_3d(layer.data).shape]
    return head


def layer_blob(layer: OverlayLayer) -> bytes:
    """The bytes of a mask or heatmap layer (boxes travel in the header: b"")."""
    if layer.kind == "mask":
        return mask_bytes(layer.data)
    if layer.kind == "heatmap":
        return heatmap_bytes(layer.data)
    return b""


def check_layer(name: str, layer: OverlayLayer, shape: Sequence[int]) -> str | None:
    """Why a mask / heatmap cannot be drawn on a volume of `shape` (z, y, x), or None."""
    if layer.kind == "boxes":
        return None
    got = tuple(_as_3d(layer.data).shape)
    want = tuple(int(s) for s in shape)
    if got == want or (len(got) == 3 and got[0] == 1 and got[1:] == want[1:]):
        return None
    return f"Layer {name!r} has shape {got}, the volume {want}: not drawn."


# ------------------------------------------------------------------------------------- window maths

def window_presets(modality: str) -> dict[str, tuple[float, float]]:
    """Reading presets a modality offers (CT: lung, mediastinum, bone, brain; none otherwise)."""
    if modality != "CT":
        return {}
    return {name: value for name, value in PRESETS.items() if name not in INTERNAL_PRESETS}


def initial_window(array: np.ndarray, modality: str) -> tuple[float, float]:
    """The window a volume opens with: lung for CT, the percentile auto-window otherwise."""
    return PRESETS["lung"] if modality == "CT" else auto_window(array)


def drag_window(center: float, width: float, dx: float, dy: float,
                value_range: float) -> tuple[float, float]:
    """Right-button drag by (dx, dy) screen pixels: right widens, down raises the center (OHIF, Slicer).

    One pixel moves `value_range / DRAG_PIXELS` units (at least 1); the width stays >= 1.
    """
    step = max(1.0, float(value_range) / DRAG_PIXELS)
    return float(center + dy * step), float(max(1.0, width + dx * step))


def window_grey(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Modality values -> uint8 grey, the browser's lookup table (as core.render.window_to_uint8)."""
    low = center - width / 2.0
    scaled = np.clip((np.asarray(values, dtype=np.float64) - low) / max(width, 1e-6), 0, 1)
    return np.floor(scaled * 255 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------ payload

def pack(header: dict, blobs: Sequence[bytes]) -> bytes:
    """b"SWV2", uint32 LE header length, JSON header (with `sizes`), then the blobs back to back."""
    head = json.dumps({**header, "sizes": [len(b) for b in blobs]}).encode()
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *blobs])


def unpack(payload: bytes) -> tuple[dict, list[bytes]]:
    """The inverse of `pack` (what the component's JavaScript does)."""
    if payload[:4] != MAGIC:
        raise ValueError("not a slice-viewer payload")
    (length,) = struct.unpack("<I", payload[4:8])
    header = json.loads(payload[8:8 + length])
    blobs, offset = [], 8 + length
    for size in header["sizes"]:
        blobs.append(bytes(payload[offset:offset + size]))
        offset += size
    return header, blobs


def feed_plan(count: int, start: int, chunk: int, slots: Sequence[int | None]) -> list[list[int]]:
    """Slice indices of each feed payload: whole chunks (less the start slice, which the viewer's own
    payload carries) ordered by distance from the start slice; always len(slots) lists."""
    n_chunks = -(-count // chunk)
    home = start // chunk
    order = sorted(range(n_chunks), key=lambda c: (abs(c - home), c))
    plan, taken = [], 0
    for size in slots:
        chunks = order[taken:] if size is None else order[taken:taken + size]
        taken += len(chunks)
        plan.append([i for c in sorted(chunks) for i in range(c * chunk, min(count, (c + 1) * chunk))
                     if i != start])
    return plan
