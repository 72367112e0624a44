"""A client-side slice viewer (Streamlit v2 component, no iframe).

Python sends the pre-rendered frames of one stack (volume x window x orientation x overlays) once,
as one binary payload (a small JSON header, then the PNG of every slice: see `pack_stack`; no
base64 and no JSON of megabytes to dump and hash on every rerun); the browser decodes them and
steps through them with the mouse wheel, the arrow / PageUp / PageDown / Home / End keys or its
own slider, with no server round trip per step. The
component reports the slice index back (debounced, so stepping never waits for a rerun) and a
click as a `probe` trigger {row, col, index} in native pixel coordinates, which the page turns into
an HU readout with core.render.readout.

The payload stays identical between reruns for the same stack (the start index is pinned per
stack), so Streamlit's message cache sends a reference instead of the frames again.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

HTML = """
<div class="sw-root" tabindex="0" aria-label="slice viewer">
  <div class="sw-bar">
    <span class="sw-index" data-testid="sw-index">loading…</span>
    <span class="sw-pointer" data-testid="sw-pointer"></span>
  </div>
  <div class="sw-stage"><canvas class="sw-canvas" data-testid="sw-canvas"></canvas></div>
  <input class="sw-slider" data-testid="sw-slider" type="range" min="0" max="0" step="1" value="0"
         aria-label="slice">
  <div class="sw-hint">wheel, ↑/↓, PgUp/PgDn, Home/End step slices · click for the value</div>
</div>
"""

CSS = """
.sw-root { outline: none; font-family: var(--st-font, sans-serif); color: var(--st-text-color, #222); }
.sw-root:focus-visible .sw-stage { box-shadow: 0 0 0 2px var(--st-primary-color, #ff4b4b); }
.sw-bar { display: flex; justify-content: space-between; gap: 1rem; font-size: 0.9rem;
          font-variant-numeric: tabular-nums; margin-bottom: 0.25rem; }
.sw-index { font-weight: 600; }
.sw-stage { background: #000; display: flex; justify-content: center; border-radius: 4px; }
.sw-canvas { display: block; image-rendering: auto; cursor: crosshair; max-width: 100%; }
.sw-slider { width: 100%; margin: 0.4rem 0 0.1rem 0; accent-color: var(--st-primary-color, #ff4b4b); }
.sw-hint { font-size: 0.75rem; opacity: 0.65; }
"""

JS = r"""
const STATES = new WeakMap();

function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

function markPainted(s) {
  const index = s.index, stack = s.stack;
  requestAnimationFrame(() => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      s.root.dataset.painted = String(index);
      window.__slicewisePaint = { key: s.key, stack, index, t: performance.now() };
    };
    ch.port2.postMessage(0);
  });
}

function draw(s) {
  const img = s.images[s.index];
  s.label.textContent = `${s.orientation} slice ${s.index + 1} / ${s.n}`;
  s.root.dataset.index = String(s.index);
  if (String(s.slider.value) !== String(s.index)) s.slider.value = String(s.index);
  if (!img) return;
  if (!img.complete || !img.naturalWidth) {
    const wanted = s.index;
    img.decode().then(() => { if (s.index === wanted) draw(s); }).catch(() => {});
    return;
  }
  s.ctx.drawImage(img, 0, 0, s.canvas.width, s.canvas.height);
  markPainted(s);
}

function report(s) {
  clearTimeout(s.timer);
  s.timer = setTimeout(() => {
    if (s.reported !== s.index) {
      s.reported = s.index;
      s.setStateValue("slice", { index: s.index, stack: s.stack });
    }
  }, 350);
}

function step(s, delta) { goTo(s, s.index + delta); }

function goTo(s, index) {
  const next = clamp(Math.round(index), 0, s.n - 1);
  if (next === s.index) return;
  s.index = next;
  draw(s);
  report(s);
}

function pointerPixel(s, ev) {
  const r = s.canvas.getBoundingClientRect();
  const col = Math.floor((ev.clientX - r.left) / r.width * s.w);
  const row = Math.floor((ev.clientY - r.top) / r.height * s.h);
  return { row: clamp(row, 0, s.h - 1), col: clamp(col, 0, s.w - 1) };
}

function layout(s) {
  const avail = Math.max(160, s.root.clientWidth || s.maxWidth);
  const ratio = (s.h * s.aspect) / s.w;
  const maxH = Math.max(240, (window.innerHeight || 900) * 0.75);
  const cssW = Math.min(avail, s.maxWidth, maxH / ratio);
  const cssH = cssW * ratio;
  s.canvas.style.width = `${cssW}px`;
  s.canvas.style.height = `${cssH}px`;
}

function bind(s) {
  s.canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    step(s, ev.deltaY > 0 ? 1 : -1);
  }, { passive: false });
  s.root.addEventListener("keydown", (ev) => {
    const big = Math.max(1, Math.round(s.n / 10));
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: big, PageUp: -big };
    if (ev.key in moves) step(s, moves[ev.key]);
    else if (ev.key === "Home") goTo(s, 0);
    else if (ev.key === "End") goTo(s, s.n - 1);
    else return;
    ev.preventDefault();
    ev.stopPropagation();
  });
  s.slider.addEventListener("input", () => goTo(s, Number(s.slider.value)));
  s.slider.addEventListener("keydown", (ev) => { if (ev.key.startsWith("Arrow")) ev.stopPropagation(); });
  s.canvas.addEventListener("pointerenter", () => s.root.focus({ preventScroll: true }));
  s.canvas.addEventListener("pointermove", (ev) => {
    const p = pointerPixel(s, ev);
    s.pointer.textContent = `x ${p.col}, y ${p.row}`;
  });
  s.canvas.addEventListener("pointerleave", () => { s.pointer.textContent = ""; });
  s.canvas.addEventListener("click", (ev) => {
    const p = pointerPixel(s, ev);
    s.root.focus({ preventScroll: true });
    s.setTriggerValue("probe", { row: p.row, col: p.col, index: s.index, stack: s.stack });
  });
  new ResizeObserver(() => layout(s)).observe(s.root);
}

function build(parentElement) {
  const q = (sel) => parentElement.querySelector(sel);
  const s = {
    root: q(".sw-root"), canvas: q(".sw-canvas"), slider: q(".sw-slider"),
    label: q(".sw-index"), pointer: q(".sw-pointer"), stack: null, images: [], index: 0, n: 0,
  };
  s.ctx = s.canvas.getContext("2d");
  bind(s);
  return s;
}

function unpack(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const magic = String.fromCharCode(u8[0], u8[1], u8[2], u8[3]);
  if (magic !== "SWV1") return null;
  const headerLength = view.getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + headerLength)));
  let offset = 8 + headerLength;
  header.frames = header.sizes.map((size) => {
    const part = u8.subarray(offset, offset + size);
    offset += size;
    return part;
  });
  return header;
}

function load(s, data) {
  for (const url of s.urls || []) URL.revokeObjectURL(url);
  s.stack = data.stack;
  s.n = data.frames.length;
  s.w = data.width; s.h = data.height; s.aspect = data.aspect || 1;
  s.maxWidth = data.max_width || 720;
  s.orientation = data.orientation || "";
  s.index = clamp(data.index || 0, 0, s.n - 1);
  s.reported = s.index;
  s.canvas.width = s.w; s.canvas.height = s.h;
  s.slider.max = String(s.n - 1);
  s.slider.disabled = s.n < 2;
  layout(s);
  const mime = data.mime || "image/png";
  const order = [...Array(s.n).keys()].sort((a, b) => Math.abs(a - s.index) - Math.abs(b - s.index));
  s.images = new Array(s.n);
  s.urls = new Array(s.n);
  for (const i of order) {
    const img = new Image();
    img.decoding = "async";
    s.urls[i] = URL.createObjectURL(new Blob([data.frames[i]], { type: mime }));
    img.src = s.urls[i];
    s.images[i] = img;
  }
  draw(s);
  for (const i of order) s.images[i].decode().catch(() => {});
}

export default function (component) {
  const { data, parentElement, setStateValue, setTriggerValue, key } = component;
  if (!data) return;
  let s = STATES.get(parentElement);
  if (!s) { s = build(parentElement); STATES.set(parentElement, s); }
  s.key = key; s.setStateValue = setStateValue; s.setTriggerValue = setTriggerValue;
  if (s.payload === data) return;  // same rerun payload: nothing to do
  s.payload = data;
  const stack = unpack(data);
  if (stack && stack.frames.length && s.stack !== stack.stack) load(s, stack);
}
"""

_component = st.components.v2.component("slicewise.slice_viewer", html=HTML, css=CSS, js=JS)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 grey (y, x) or RGB (y, x, 3) -> PNG bytes; level 1 is ~3x faster than the default."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def encode_frames(frames: Sequence[np.ndarray], workers: int = 4) -> list[bytes]:
    """Frames -> PNG bytes (zlib releases the GIL, so threads help)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(encode_png, frames))


MAGIC = b"SWV1"


def pack_stack(header: dict, frames: Sequence[bytes]) -> bytes:
    """b"SWV1", uint32 LE header length, JSON header (with `sizes`), then the frames back to back."""
    head = json.dumps({**header, "sizes": [len(f) for f in frames]}).encode()
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *frames])


def unpack_stack(payload: bytes) -> tuple[dict, list[bytes]]:
    """The inverse of `pack_stack` (what the component's JavaScript does)."""
    if payload[:4] != MAGIC:
        raise ValueError("not a slice-viewer payload")
    (length,) = struct.unpack("<I", payload[4:8])
    header = json.loads(payload[8:8 + length])
    frames, offset = [], 8 + length
    for size in header["sizes"]:
        frames.append(payload[offset:offset + size])
        offset += size
    return header, frames


def stack_id(parts: Sequence[Any]) -> str:
    """A short stable id for what determines the frames."""
    return hashlib.sha1(repr(tuple(parts)).encode()).hexdigest()[:16]


def slice_viewer(frames: Sequence[bytes], *, stack: str, width: int, height: int, aspect: float,
                 index: int, orientation: str, key: str,
                 max_width: int = 720) -> tuple[int | None, dict | None]:
    """Mount the viewer; return (reported slice index or None, last click probe or None).

    `index` is where the stack opens. It is pinned per stack in session state so that the payload
    stays byte-identical across reruns (then Streamlit sends only a reference).
    """
    pin_key = f"{key}__start"
    pinned = st.session_state.get(pin_key)
    if not pinned or pinned[0] != stack:
        pinned = (stack, int(index))
        st.session_state[pin_key] = pinned
    start = pinned[1]
    header = {"stack": stack, "width": int(width), "height": int(height), "aspect": float(aspect),
              "index": start, "orientation": orientation, "max_width": int(max_width)}
    data = pack_stack(header, frames)
    result = _component(key=key, data=data, default={"slice": {"index": start, "stack": stack}},
                        on_slice_change=_noop, on_probe_change=_noop)
    reported = _get(result, "slice")
    if not (isinstance(reported, dict) and reported.get("stack") == stack):
        reported = {}
    reported = reported.get("index")
    probe = _get(result, "probe")
    if isinstance(probe, list):
        probe = probe[-1] if probe else None
    if isinstance(probe, dict):
        st.session_state[f"{key}__probe"] = probe  # triggers last one run; the readout should stay
    probe = st.session_state.get(f"{key}__probe")
    if not isinstance(probe, dict) or probe.get("stack") != stack:
        probe = None
    return (int(reported) if isinstance(reported, int | float) else None), probe


def _noop() -> None:
    """Callbacks register the state names; the values are read from the result."""


def _get(result: Any, name: str) -> Any:
    try:
        return result[name]
    except (KeyError, TypeError):
        return getattr(result, name, None)
