"""The Annotate page's box canvas: one Streamlit v2 component (in the page's own document, no iframe)
showing one slice and its box, for the whole page under one key.

Drag on empty ground draws a box (one per slice: a new drag replaces it), drag inside moves it, drag
on an edge or corner resizes it. Each finished drag is sent at once (no debounce) as an edit naming
the slice it was DRAWN on ({seq, volume, slice, image, box}); the component keeps every edit the page
has not acknowledged (`acked`) in its state value `edits`, so the page (core.annotate.new_edits)
stores each one, once, on its own slice, whatever slice is on screen when it arrives. The image keeps
its aspect ratio and is as large as the column and the window's height allow. The mouse wheel and the
keys beyond each button's own shortcut press the page's buttons (found by their `st-key-` class).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

HTML = """
<div class="bc-root" data-testid="bc-root">
  <div class="bc-stage" data-testid="bc-stage" tabindex="0" aria-label="slice image: drag to draw the box">
    <canvas class="bc-image" data-testid="bc-image"></canvas>
    <div class="bc-box" data-testid="bc-box" hidden></div>
    <span class="bc-label" data-testid="bc-label"></span>
  </div>
</div>
"""

CSS = """
.bc-root { width: 100%; }
.bc-stage { position: relative; cursor: crosshair; outline: none; touch-action: none; user-select: none;
            background: #000; border-radius: 2px; }
.bc-stage:focus { box-shadow: 0 0 0 1px rgba(140, 140, 140, 0.8); }
.bc-image { display: block; width: 100%; height: 100%; }
.bc-box { position: absolute; box-sizing: border-box; border: 2px solid #ff4b4b; background: transparent;
          pointer-events: none; }
.bc-label { position: absolute; left: 6px; top: 4px; color: #fff; opacity: 0.8; pointer-events: none;
            font: 12px/1.2 var(--st-font, sans-serif); font-variant-numeric: tabular-nums;
            text-shadow: 0 0 2px #000; }
"""

JS = (Path(__file__).with_name("box_canvas.js")).read_text()

_component = st.components.v2.component("slicewise.box_canvas", html=HTML, css=CSS, js=JS)


def png_data_url(grey: np.ndarray) -> str:
    """A uint8 greyscale image as a PNG data URL (fast compression: it is sent once per slice)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_url(key: str, grey: np.ndarray, image_key: object) -> str:
    """The PNG data URL of the slice, encoded once while the slice and its window stay the same (a page
    run that changes only the box, e.g. a proposal or a confirm, sends the same string)."""
    name = f"{key}__png"
    cached = st.session_state.get(name)
    if image_key is not None and cached and cached[0] == image_key:
        return cached[1]
    url = png_data_url(grey)
    st.session_state[name] = (image_key, url)
    return url


def box_canvas(*, key: str, grey: np.ndarray, volume_id: str, z: int, n_slices: int, image_id: str,
               box: Sequence[float] | None, kind: str | None, colours: Mapping[str, str], revision: int,
               acked: Sequence[str], keys: Mapping[str, str], nav: Mapping[str, str],
               on_edits: Callable[[], None], image_key: object = None) -> None:
    """Mount the canvas for slice z (0-based) of a volume. Edits come back through session state
    (`st.session_state[key]["edits"]`); `on_edits` runs first thing in the page run that brings one.
    `image_key` (hashable) names what `grey` shows, e.g. (volume, slice, window): the same key reuses
    the encoded image."""
    height, width = (int(v) for v in grey.shape[:2])
    data = {
        "src": _image_url(key, grey, image_key), "width": width, "height": height, "volume": str(volume_id),
        "slice": int(z), "n": int(n_slices), "image_id": str(image_id),
        "box": [float(v) for v in box] if box is not None else None, "kind": kind or "person",
        "colours": dict(colours), "rev": int(revision), "acked": list(acked), "keys": dict(keys),
        "nav": dict(nav),
    }
    _component(key=key, data=data, default={"edits": []}, on_edits_change=on_edits)
