"""A client-side slice viewer (Streamlit v2 component, no iframe).

Python sends the pre-rendered frames of one stack (volume x window x orientation x overlays) as
binary payloads (a small JSON header, then PNGs back to back: see `pack_stack`; no base64 and no JSON
of megabytes). The viewer's own payload holds only the slice it opens on, so that slice paints as
soon as the page reaches the viewer; the rest of the stack follows in a few "feed" payloads
(`slice_viewer_feed`, called at the end of the page run), nearest slices first, which the browser
merges into the viewer by stack id. The browser then steps through the frames with the mouse wheel,
the arrow / PageUp / PageDown / Home / End keys or its own slider, with no server round trip per
step. The component reports the slice index back (debounced, so stepping never waits for a rerun)
and a click as a `probe` trigger {row, col, index} in native pixel coordinates, which the page turns
into an HU readout with core.render.readout.

Every payload stays identical between reruns for the same stack (the start index is pinned per
stack), so Streamlit's message cache sends a reference instead of the frames again.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import streamlit as st
from PIL import Image

HTML = """
<div class="sw-root" tabindex="0" aria-label="slice viewer">
  <div class="sw-bar">
    <span class="sw-index" data-testid="sw-index">loading…</span>
    <span class="sw-status" data-testid="sw-status"></span>
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
.sw-status { flex: 1; opacity: 0.65; }
.sw-stage { background: #000; display: flex; justify-content: center; border-radius: 4px; }
.sw-canvas { display: block; image-rendering: auto; cursor: crosshair; max-width: 100%; }
.sw-root[data-waiting] .sw-canvas { opacity: 0.35; }  /* the slice named above has not arrived yet */
.sw-slider { width: 100%; margin: 0.4rem 0 0.1rem 0; accent-color: var(--st-primary-color, #ff4b4b); }
.sw-hint { font-size: 0.75rem; opacity: 0.65; }
"""

COMMON_JS = r"""
// Viewers and the feed payloads meant for them, per target (the viewer's Streamlit key). Global, not
// module state: the viewer and the feed are two components, so two modules.
const REG = (window.__slicewiseViewer ||= { viewers: new Map(), feeds: new Map() });

function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

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
  if (!header.indices) header.indices = header.frames.map((_, i) => i);
  return header;
}

function markPainted(s) {
  const index = s.index, stack = s.stack;
  requestAnimationFrame(() => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      s.root.dataset.painted = String(index);
      s.root.dataset.paintedStack = stack;
      window.__slicewisePaint = { key: s.key, stack, index, t: performance.now() };
    };
    ch.port2.postMessage(0);
  });
}

function showStatus(s) {
  const missing = s.n - s.have;
  s.status.textContent = !s.images[s.index] ? "loading this slice…"
    : missing > 0 ? `loading slices ${s.have} / ${s.n}` : "";
}

// The canvas keeps the last painted slice until the next one is decoded: resizing it (which clears
// it) happens in the same task as the drawImage, so no blank frame is ever on screen.
function draw(s) {
  s.label.textContent = `${s.orientation} slice ${s.index + 1} / ${s.n}`;
  s.root.dataset.index = String(s.index);
  if (String(s.slider.value) !== String(s.index)) s.slider.value = String(s.index);
  showStatus(s);
  const img = s.images[s.index];
  if (!img) { s.root.dataset.waiting = ""; return; }
  if (!img.complete || !img.naturalWidth) {
    const wanted = s.index, stack = s.stack;
    img.decode().then(() => { if (s.index === wanted && s.stack === stack) draw(s); }).catch(() => {});
    return;
  }
  if (s.canvas.width !== s.w || s.canvas.height !== s.h) {
    s.canvas.width = s.w; s.canvas.height = s.h;
    layout(s);
  }
  s.ctx.drawImage(img, 0, 0, s.w, s.h);
  delete s.root.dataset.waiting;
  markPainted(s);
}

function layout(s) {
  const avail = Math.max(160, s.root.clientWidth || s.maxWidth);
  const ratio = (s.h * s.aspect) / s.w;
  const maxH = Math.max(240, (window.innerHeight || 900) * 0.75);
  const cssW = Math.min(avail, s.maxWidth, maxH / ratio);
  s.canvas.style.width = `${cssW}px`;
  s.canvas.style.height = `${cssW * ratio}px`;
}

// Frames -> images of the viewer's stack; true when the slice on screen is among them.
function addFrames(s, indices, frames) {
  const fresh = [];
  indices.forEach((i, k) => {
    if (!(i >= 0 && i < s.n) || s.images[i]) return;
    const url = URL.createObjectURL(new Blob([frames[k]], { type: s.mime }));
    const img = new Image();
    img.decoding = "async";
    img.src = url;
    s.urls.push(url);
    s.images[i] = img;
    s.have += 1;
    fresh.push(i);
  });
  if (s.have < s.n) s.root.dataset.pending = String(s.n - s.have);
  else delete s.root.dataset.pending;
  fresh.sort((a, b) => Math.abs(a - s.index) - Math.abs(b - s.index));
  for (const i of fresh) s.images[i].decode().catch(() => {});
  showStatus(s);
  return fresh.includes(s.index);
}
"""

VIEWER_JS = COMMON_JS + r"""
const STATES = new WeakMap();

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
  new ResizeObserver(() => { if (s.n) layout(s); }).observe(s.root);
}

function build(parentElement) {
  const q = (sel) => parentElement.querySelector(sel);
  const s = {
    root: q(".sw-root"), canvas: q(".sw-canvas"), slider: q(".sw-slider"), label: q(".sw-index"),
    status: q(".sw-status"), pointer: q(".sw-pointer"), stack: null, images: [], urls: [], index: 0,
    n: 0, have: 0,
  };
  s.ctx = s.canvas.getContext("2d");
  bind(s);
  return s;
}

function release(s) {
  for (const url of s.urls) URL.revokeObjectURL(url);
  s.urls = [];
}

function register(s) {
  const old = REG.viewers.get(s.target);
  if (old && old !== s && !old.root.isConnected) release(old);  // a viewer that was unmounted
  REG.viewers.set(s.target, s);
}

function load(s, data) {
  release(s);
  s.stack = data.stack;
  s.n = data.count || data.frames.length;
  s.w = data.width; s.h = data.height; s.aspect = data.aspect || 1;
  s.maxWidth = data.max_width || 720;
  s.orientation = data.orientation || "";
  s.mime = data.mime || "image/png";
  s.index = clamp(data.index || 0, 0, s.n - 1);
  s.reported = s.index;
  s.images = new Array(s.n);
  s.have = 0;
  s.root.dataset.stack = s.stack;
  s.slider.max = String(s.n - 1);
  s.slider.disabled = s.n < 2;
  if (!s.canvas.width || s.canvas.width !== s.w || s.canvas.height !== s.h) layout(s);
  addFrames(s, data.indices, data.frames);
  for (const part of (REG.feeds.get(s.target) || new Map()).values()) {
    if (part.stack === s.stack) addFrames(s, part.indices, part.frames);
  }
  draw(s);
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
  if (!stack || !stack.frames.length) return;
  s.target = stack.target || key;
  window.__slicewiseLoad = { stack: stack.stack, t: performance.now() };  // bench_stepping's mark
  register(s);
  if (s.stack !== stack.stack) load(s, stack);
  else if (addFrames(s, stack.indices, stack.frames)) draw(s);
}
"""

FEED_JS = COMMON_JS + r"""
const SEEN = new WeakMap();

// A feed payload: more frames of a viewer's stack. Kept per target and slot, so that a viewer that
// mounts (or changes stack) after its feed arrived still finds them.
export default function (component) {
  const { data, parentElement } = component;
  if (!data || SEEN.get(parentElement) === data) return;
  SEEN.set(parentElement, data);
  const part = unpack(data);
  if (!part) return;
  if (!REG.feeds.has(part.target)) REG.feeds.set(part.target, new Map());
  REG.feeds.get(part.target).set(part.slot, part);
  const s = REG.viewers.get(part.target);
  if (s && s.stack === part.stack && addFrames(s, part.indices, part.frames)) draw(s);
}
"""

_component = st.components.v2.component("slicewise.slice_viewer", html=HTML, css=CSS, js=VIEWER_JS)
_feed = st.components.v2.component("slicewise.slice_feed", html='<div class="sw-feed"></div>',
                                   css=".sw-feed { display: none; }", js=FEED_JS)


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


class FrameSource(Protocol):
    """The encoded frames of one stack (see pages._ui.frames.StackFrames)."""

    stack: str  # an id of everything that determines the pixels
    count: int  # slices in the stack
    chunk: int  # frames are encoded (and cached) in runs of this many slices: feeds send whole runs

    def frames(self, indices: Sequence[int]) -> list[bytes]: ...


FEED_SLOTS = (3, 6, None)  # chunks per feed payload, nearest the start first; None: all the rest


def feed_plan(count: int, start: int, chunk: int) -> list[list[int]]:
    """Slice indices of each feed payload: whole chunks (less the start slice, which the viewer's own
    payload carries) ordered by distance from the start slice.

    The first payload holds the start's chunk and its neighbours (so stepping a few slices either way
    works almost at once), the next a wider band, the last everything else. Always len(FEED_SLOTS)
    lists (some maybe empty), so the page keeps the same elements whatever the stack.
    """
    n_chunks = -(-count // chunk)
    home = start // chunk
    order = sorted(range(n_chunks), key=lambda c: (abs(c - home), c))
    plan, taken = [], 0
    for size in FEED_SLOTS:
        chunks = order[taken:] if size is None else order[taken:taken + size]
        taken += len(chunks)
        plan.append([i for c in sorted(chunks) for i in range(c * chunk, min(count, (c + 1) * chunk))
                     if i != start])  # the viewer's own payload has the start slice
    return plan


def _pinned_start(key: str, stack: str, index: int) -> int:
    """The slice a stack opens on, pinned per stack so that its payloads stay byte-identical."""
    pin_key = f"{key}__start"
    pinned = st.session_state.get(pin_key)
    if not pinned or pinned[0] != stack:
        pinned = (stack, int(index))
        st.session_state[pin_key] = pinned
    return pinned[1]


def slice_viewer(source: FrameSource, *, width: int, height: int, aspect: float, index: int,
                 orientation: str, key: str, max_width: int = 720) -> tuple[int | None, dict | None]:
    """Mount the viewer with the start slice only; return (reported slice index or None, last click
    probe or None). Call `slice_viewer_feed` with the same source and key later in the run.

    `index` is where the stack opens. It is pinned per stack in session state so that the payload
    stays byte-identical across reruns (then Streamlit sends only a reference).
    """
    stack = source.stack
    start = min(max(_pinned_start(key, stack, index), 0), source.count - 1)
    header = {"target": key, "stack": stack, "count": int(source.count), "width": int(width),
              "height": int(height), "aspect": float(aspect), "index": start, "orientation": orientation,
              "max_width": int(max_width), "indices": [start]}
    data = pack_stack(header, source.frames([start]))
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


def slice_viewer_feed(source: FrameSource, *, key: str) -> None:
    """Send the rest of the viewer's stack (every slice but the start one), nearest slices first.

    Call it at the end of the page run: each payload is encoded only when the run gets here, after
    the start slice and the rest of the page are already on screen. The feed elements render nothing.
    """
    pinned = st.session_state.get(f"{key}__start")
    start = pinned[1] if pinned and pinned[0] == source.stack else source.count // 2
    start = min(max(start, 0), source.count - 1)
    for slot, indices in enumerate(feed_plan(source.count, start, source.chunk)):
        header = {"target": key, "stack": source.stack, "slot": slot, "indices": indices}
        _feed(key=f"{key}_feed{slot}", data=pack_stack(header, source.frames(indices) if indices else []))


def _noop() -> None:
    """Callbacks register the state names; the values are read from the result."""


def _get(result: Any, name: str) -> Any:
    try:
        return result[name]
    except (KeyError, TypeError):
        return getattr(result, name, None)
