"""A client-side slice viewer that composites in the browser (Streamlit v2 component, no iframe).

Python sends the image once in modality units and each overlay layer apart (see core.view_payload:
uint16 slices deflated, masks and heatmaps as uint8 volumes, boxes as vectors); the browser windows
the raw values through a lookup table, reslices coronal / sagittal planes from the axial slices and
draws the layers over them. Window presets, window/level by right-button drag (OHIF / 3D Slicer:
horizontal = width, vertical = center, shown live), layer toggles, opacity, fill/contour and colour
map are all browser-side: no rerun, no bytes. The readout under the pointer comes from the raw values.

The viewer's own payload is small: the layout, the layers' look and the opening slice, so that slice
paints as soon as the page reaches the viewer. The rest follows in "feed" payloads (`slice_viewer_feed`,
called at the end of the page run): the axial slices nearest the opening one first, then each layer.
Every payload depends only on the volume (and the viewer's on the orientation), so a rerun sends
references, not bytes. The component reports one state value, `view` (slice, window, layers),
debounced and never during a drag, and a left click as a `probe` trigger for the server's readout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import streamlit as st

from core import view_payload

HTML = """
<div class="sw-root" tabindex="0" aria-label="slice viewer">
  <div class="sw-bar">
    <span class="sw-index" data-testid="sw-index">loading…</span>
    <span class="sw-status" data-testid="sw-status"></span>
    <span class="sw-pointer" data-testid="sw-pointer"></span>
  </div>
  <div class="sw-tools">
    <select class="sw-preset" aria-label="window preset"></select>
    <span class="sw-wl" data-testid="sw-wl"></span>
  </div>
  <div class="sw-stage"><canvas class="sw-canvas" data-testid="sw-canvas"></canvas></div>
  <input class="sw-slider" data-testid="sw-slider" type="range" min="0" max="0" step="1" value="0"
         aria-label="slice">
  <div class="sw-layers" hidden></div>
  <div class="sw-hint">wheel, ↑/↓, PgUp/PgDn, Home/End step slices · right-drag: window (→ width, ↓ level)
    · click for the value</div>
</div>
"""

CSS = """
.sw-root { outline: none; font-family: var(--st-font, sans-serif); color: var(--st-text-color, #222); }
.sw-root:focus-visible .sw-stage { box-shadow: 0 0 0 2px var(--st-primary-color, #ff4b4b); }
.sw-bar, .sw-tools { display: flex; justify-content: space-between; gap: 1rem; font-size: 0.9rem;
          font-variant-numeric: tabular-nums; margin-bottom: 0.25rem; align-items: center; }
.sw-tools { justify-content: flex-start; }
.sw-index { font-weight: 600; }
.sw-status { flex: 1; opacity: 0.65; }
.sw-stage { background: #000; display: flex; justify-content: center; border-radius: 4px; }
.sw-canvas { display: block; image-rendering: auto; cursor: crosshair; max-width: 100%; touch-action: none; }
.sw-root[data-waiting] .sw-canvas { opacity: 0.6; }  /* the plane named above is still filling in */
.sw-slider { width: 100%; margin: 0.4rem 0 0.1rem 0; accent-color: var(--st-primary-color, #ff4b4b); }
.sw-layers { display: grid; gap: 0.2rem; margin: 0.3rem 0; font-size: 0.85rem; }
.sw-layer { display: grid; grid-template-columns: minmax(0, 1fr) 7rem 5.5rem; gap: 0.5rem;
            align-items: center; }
.sw-toggle { display: flex; gap: 0.35rem; align-items: center; overflow: hidden; white-space: nowrap;
             text-overflow: ellipsis; cursor: pointer; }
.sw-name { overflow: hidden; text-overflow: ellipsis; }
.sw-swatch { display: inline-block; width: 0.8em; height: 0.8em; border: 3px solid; flex: none; }
.sw-opacity { width: 7rem; accent-color: var(--st-primary-color, #ff4b4b); }
.sw-hint { font-size: 0.75rem; opacity: 0.65; }
"""

_HERE = Path(__file__).parent
COMMON_JS = (_HERE / "slice_viewer_common.js").read_text()  # the registry, unpack, inflate, feed decoding
VIEWER_JS = COMMON_JS + (_HERE / "slice_viewer.js").read_text()  # reslicing, windowing, compositing, input
FEED_JS = COMMON_JS + (_HERE / "slice_feed.js").read_text()

_component = st.components.v2.component("slicewise.slice_viewer", html=HTML, css=CSS, js=VIEWER_JS)
_feed = st.components.v2.component("slicewise.slice_feed", html='<div class="sw-feed"></div>',
                                   css=".sw-feed { display: none; }", js=FEED_JS)


class ViewSource(Protocol):
    """What the viewer shows (see pages._ui.frames.VolumeView): a volume's raw slices and its layers."""

    volume_key: str  # an id of the volume's file and version

    def header(self, orientation: str) -> dict: ...  # shape, coding, aspect, presets, layers' look
    def slices(self, indices: Sequence[int]) -> list[bytes]: ...
    def feed_payload(self, start: int, slot: int) -> bytes: ...  # slot < feed_count, encoded on call
    def layer_payloads(self) -> list[tuple[str, bytes]]: ...  # (layer id, payload) per mask / heatmap

    @property
    def count(self) -> int: ...  # axial slices

    @property
    def feed_count(self) -> int: ...  # feed payloads that carry the axial slices


@dataclass(frozen=True)
class ViewerState:
    """What the browser reported: the slice on screen (None before any report for this stack), the
    last click (row, col, index) or None, and the reader's view {window, layers, ...} or None."""

    index: int | None
    probe: dict | None
    view: dict | None


def stack_id(parts: Sequence[Any]) -> str:
    """A short stable id for what determines a payload."""
    return hashlib.sha1(repr(tuple(parts)).encode()).hexdigest()[:16]


def _pinned(name: str, ident: str, value: int) -> int:
    """`value` pinned per `ident` in session state, so that payloads stay byte-identical across reruns."""
    pinned = st.session_state.get(name)
    if not pinned or pinned[0] != ident:
        pinned = (ident, int(value))
        st.session_state[name] = pinned
    return pinned[1]


def feed_start(key: str, source: ViewSource, axial_index: int) -> int:
    """The axial slice the feeds order themselves around: where the volume was first opened."""
    start = _pinned(f"{key}__feed", source.volume_key, axial_index)
    return min(max(start, 0), source.count - 1)


def slice_viewer(source: ViewSource, *, orientation: str, index: int, axial_index: int, key: str,
                 max_width: int = 720) -> ViewerState:
    """Mount the viewer with its opening slice; call `slice_viewer_feed` with the same source and key
    later in the run. `index` is where this orientation opens (pinned per stack), `axial_index` the
    axial slice the feeds start from when the volume is new."""
    stack = stack_id((source.volume_key, orientation))
    head = source.header(orientation)
    n = {"axial": 0, "coronal": 1, "sagittal": 2}[orientation]
    start = min(max(_pinned(f"{key}__start", stack, index), 0), head["shape"][n] - 1)
    first = sorted({feed_start(key, source, axial_index)} | ({start} if orientation == "axial" else set()))
    header = {**head, "target": key, "stack": stack, "orientation": orientation, "index": start,
              "first": first, "max_width": int(max_width)}
    data = view_payload.pack(header, source.slices(first))
    result = _component(key=key, data=data, default={"view": None}, on_view_change=_noop,
                        on_probe_change=_noop)
    _count_run(key, source.volume_key)
    view = _get(result, "view")
    view = view if isinstance(view, dict) and view.get("volume") == source.volume_key else None
    st.session_state[f"{key}__view"] = view
    reported = view.get("index") if view and view.get("stack") == stack else None
    probe = _get(result, "probe")
    if isinstance(probe, list):
        probe = probe[-1] if probe else None
    if isinstance(probe, dict):
        st.session_state[f"{key}__probe"] = probe  # triggers last one run; the readout should stay
    probe = st.session_state.get(f"{key}__probe")
    if not isinstance(probe, dict) or probe.get("stack") != stack:
        probe = None
    return ViewerState(int(reported) if isinstance(reported, int | float) else None, probe, view)


def _count_run(key: str, volume_key: str) -> int:
    """How many page runs in a row have shown this volume (1: the first)."""
    name = f"{key}__runs"
    ident, runs = st.session_state.get(name) or ("", 0)
    runs = runs + 1 if ident == volume_key else 1
    st.session_state[name] = (volume_key, runs)
    return runs


def slice_viewer_feed(source: ViewSource, *, key: str) -> None:
    """Send the rest of the volume: every axial slice but the feed start one, nearest first, then the
    layers, from the second page run showing the volume on (the browser reports its first paint at
    once, which makes that run): tens of megabytes arriving with the viewer's own payload delayed its
    first paint by seconds. The payloads depend on the volume only: a rerun sends references, and
    once the browser reports that it holds every slice (layer), reruns leave those feeds out."""
    ident, runs = st.session_state.get(f"{key}__runs") or ("", 0)
    if ident != source.volume_key or runs < 2:
        return
    view = st.session_state.get(f"{key}__view") or {}  # this volume's, or {}
    if not view.get("complete"):  # once the browser holds every slice, reruns stop carrying them
        start = feed_start(key, source, source.count // 2)
        for slot in range(source.feed_count):  # one payload alive at a time: Streamlit copies each one
            _feed(key=f"{key}_feed{slot}", data=source.feed_payload(start, slot))  # (proto, hash, send)
    loaded = set(view.get("loaded") or ())
    for ident, data in source.layer_payloads():
        if ident not in loaded:
            _feed(key=f"{key}_layer_{ident}", data=data)


def _noop() -> None:
    """Callbacks register the state names; the values are read from the result."""


def _get(result: Any, name: str) -> Any:
    try:
        return result[name]
    except (KeyError, TypeError):
        return getattr(result, name, None)
