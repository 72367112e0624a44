"""What the Annotate page decides, without Streamlit: canvas geometry, canvas drawing <-> box,
what a canvas change means for the store, slice navigation and progress.

The canvas shows the slice stretched to `canvas_size`; a box is stored as fractions of the slice
width / height, so canvas pixels divide by the canvas size, whatever the image size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.annotations import BoxStore, InvalidBoxError, normalise_box
from core.boxes import Box
from core.propose import propose_lung_box, propose_volume
from core.volume import Volume

RECT_TYPES = ("Rect", "LabeledRect", "rect")
_ORIGIN = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}
MIN_CANVAS_PX = 3.0  # a click without a drag makes a tiny rectangle: not a box
AUTO_ANNOTATOR = "auto"


def canvas_size(shape2d: tuple[int, int], max_side: int = 512) -> tuple[int, int]:
    """(width, height) of the canvas in CSS pixels: the slice's aspect ratio, longest side max_side."""
    height, width = int(shape2d[0]), int(shape2d[1])
    scale = max_side / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def box_to_drawing(box: Box | None, canvas_w: int, canvas_h: int, *, stroke: str = "#ff4b4b",
                   stroke_width: int = 2, fill: str = "rgba(255, 75, 75, 0.08)") -> dict[str, Any]:
    """The canvas `initial_drawing` holding one box (or none), as st_canvas's own boxes_to_drawing."""
    if box is None:
        return {"objects": []}
    x0, y0, x1, y1 = box
    return {"objects": [{
        "type": "LabeledRect", "label": "", "left": x0 * canvas_w, "top": y0 * canvas_h,
        "width": (x1 - x0) * canvas_w, "height": (y1 - y0) * canvas_h, "originX": "left", "originY": "top",
        "scaleX": 1, "scaleY": 1, "angle": 0, "stroke": stroke, "strokeWidth": stroke_width, "fill": fill,
        "lockRotation": True, "strokeUniform": True,
    }]}


def _rect_pixels(obj: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """(left, top, width, height) in canvas px of a fabric.js rect, scale and origin applied."""
    width = float(obj.get("width", 0)) * float(obj.get("scaleX", 1) or 1)
    height = float(obj.get("height", 0)) * float(obj.get("scaleY", 1) or 1)
    left = float(obj.get("left", 0)) - _ORIGIN.get(obj.get("originX", "left"), 0.0) * width
    top = float(obj.get("top", 0)) - _ORIGIN.get(obj.get("originY", "top"), 0.0) * height
    if width < 0:
        left, width = left + width, -width
    if height < 0:
        top, height = top + height, -height
    return left, top, width, height


def rects_in_drawing(drawing: Mapping[str, Any] | None) -> list[tuple[float, float, float, float]]:
    """Every rectangle of a canvas JSON drawing as (left, top, width, height) canvas px, oldest first."""
    if not drawing:
        return []
    return [_rect_pixels(o) for o in drawing.get("objects", []) if o.get("type") in RECT_TYPES]


def box_from_drawing(drawing: Mapping[str, Any] | None, canvas_w: int, canvas_h: int) -> Box | None:
    """The newest rectangle of the drawing as a clipped fraction box; None if there is no usable one."""
    for left, top, width, height in reversed(rects_in_drawing(drawing)):
        if width < MIN_CANVAS_PX or height < MIN_CANVAS_PX:
            continue
        try:
            return normalise_box(left / canvas_w, top / canvas_h, (left + width) / canvas_w,
                                 (top + height) / canvas_h)
        except InvalidBoxError:
            continue  # dragged entirely off the image
    return None


@dataclass(frozen=True)
class CanvasChange:
    """What a canvas result means: action is "none", "upsert" or "delete"; `redraw` when the canvas
    must be re-initialised to show exactly the stored box (e.g. a second rectangle was drawn)."""

    action: str
    box: Box | None = None
    redraw: bool = False


def boxes_differ(a: Box | None, b: Box | None, tolerance: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return max(abs(p - q) for p, q in zip(a, b, strict=True)) > tolerance


def canvas_change(stored: Box | None, drawing: Mapping[str, Any] | None, canvas_w: int,
                  canvas_h: int) -> CanvasChange:
    """Compare the canvas with the stored box of the slice (tolerance: a quarter canvas pixel)."""
    drawn = box_from_drawing(drawing, canvas_w, canvas_h)
    n_rects = len(rects_in_drawing(drawing))
    redraw = n_rects > 1 or (n_rects == 1 and drawn is None)
    if not boxes_differ(stored, drawn, 0.25 / max(canvas_w, canvas_h)):
        return CanvasChange("none", stored, redraw)
    if drawn is None:
        return CanvasChange("delete", None, redraw)
    return CanvasChange("upsert", drawn, redraw)


CANVAS_KEY_PREFIX = "annotate_canvas"


def canvas_key(volume_id: str, z: int, revision: int) -> str:
    """The canvas widget's key: a new canvas per volume, slice and redraw."""
    return f"{CANVAS_KEY_PREFIX}|{volume_id}|{int(z)}|{int(revision)}"


def parse_canvas_key(key: str) -> tuple[str, int, int] | None:
    """(volume id, slice, revision) of a key made by `canvas_key`, else None."""
    if not isinstance(key, str) or not key.startswith(CANVAS_KEY_PREFIX + "|"):
        return None
    try:
        _, rest = key.split("|", 1)
        volume_id, z, revision = rest.rsplit("|", 2)
        return volume_id, int(z), int(revision)
    except ValueError:
        return None


def drawing_fingerprint(drawing: Mapping[str, Any] | None) -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps(drawing, sort_keys=True, default=str).encode()).hexdigest()


def late_drawings(state: Mapping[str, Any], volume_id: str, current_key: str,
                  seen: Mapping[str, str] | None = None) -> list[tuple[int, dict]]:
    """Drawings that earlier canvases of this volume sent after the page had moved on.

    After Next (or any redraw) the old slice's canvas stays on screen for a moment; a box
    dragged on it arrives under the old canvas's key, not the one the page now shows. Such a
    drawing is still in the session state at the start of the run it triggered: (slice,
    drawing) for each, so that the page can save it to the slice it was drawn on. `seen` maps
    keys to the fingerprint of the drawing the page already handled while that canvas was the
    current one: those are not late. Canvases of the current slice are never late: they were
    replaced by a redraw of the same slice (after Delete or Undo), whose state must not undo it.
    """
    seen = seen or {}
    current = parse_canvas_key(current_key)
    found = []
    for key, value in state.items():
        parsed = parse_canvas_key(key)
        if parsed is None or key == current_key or parsed[0] != volume_id or not isinstance(value, Mapping):
            continue
        if current is not None and parsed[1] == current[1]:
            continue
        drawing = (value.get("drawing") or {}).get("raw")
        if isinstance(drawing, Mapping) and seen.get(key) != drawing_fingerprint(drawing):
            found.append((parsed[1], dict(drawing)))
    return sorted(found, key=lambda item: item[0])


def row_box(row: Mapping[str, Any] | None) -> Box | None:
    return None if row is None else (row["Xmin"], row["Ymin"], row["Xmax"], row["Ymax"])


def volume_boxes(store: BoxStore, volume: Volume) -> dict[int, dict]:
    """{z: row} of the volume's annotated slices, matched by slice id (robust to re-sorting)."""
    by_image = {r["Image"]: r for r in store.rows()}
    return {z: by_image[sid] for z, sid in enumerate(volume.slice_ids) if sid in by_image}


def next_without_box(n_slices: int, annotated: Iterable[int], current: int) -> int | None:
    """The next slice after `current` that has no box, wrapping round; None when all have one."""
    done = set(annotated)
    for step in range(1, n_slices + 1):
        z = (current + step) % n_slices
        if z not in done:
            return z
    return None


def slice_progress(z: int, n_slices: int, n_annotated: int) -> tuple[float, str]:
    """(fraction, text) of the Annotate page's progress bar for slice z."""
    return (n_annotated / n_slices if n_slices else 0.0,
            f"Slice {z + 1} of {n_slices} · {n_annotated} of {n_slices} slices annotated")


def clamp_slice(z: int, n_slices: int) -> int:
    return max(0, min(int(z), n_slices - 1))


def save_box(store: BoxStore, volume: Volume, z: int, box: Box, annotator: str) -> dict:
    return store.upsert(volume.slice_ids[z], *box, volume=volume.volume_id, slice=z, annotator=annotator)


def delete_box(store: BoxStore, volume: Volume, z: int, annotator: str) -> bool:
    return store.delete(volume.slice_ids[z], annotator=annotator)


def propose_for_slice(store: BoxStore, volume: Volume, z: int) -> Box | None:
    """Propose and store (annotator "auto") a box for one CT slice; None when no lung is found.

    An explicit request for this slice: it replaces whatever box the slice holds (one undo step).
    """
    box = propose_lung_box(volume.array[z])
    if box is not None:
        save_box(store, volume, z, box, AUTO_ANNOTATOR)
    return box


def propose_for_volume(store: BoxStore, volume: Volume, *, overwrite: bool = False) -> int:
    """Propose boxes for every slice (one undo step). A person's box is never replaced; a slice
    holding a proposal (rule or model) keeps it unless `overwrite`. Returns the number written."""
    stored = volume_boxes(store, volume)
    keep = {z for z, row in stored.items() if not (overwrite and is_proposal(row))}
    proposed = propose_volume(volume)
    boxes = [{"Image": volume.slice_ids[z], "Xmin": b[0], "Ymin": b[1], "Xmax": b[2], "Ymax": b[3],
              "Volume": volume.volume_id, "Slice": z}
             for z, b in sorted(proposed.items()) if z not in keep]
    return store.upsert_many(boxes, annotator=AUTO_ANNOTATOR) if boxes else 0


MODEL_ANNOTATOR_PREFIX = "model:"  # a trained localizer's proposal: annotator `model:<run name>`
RULE, MODEL = "rule", "model"


def proposal_annotator(name: str | None) -> str | None:
    """"rule" for the HU-rule annotator `auto`, "model" for `model:<run>`; None for a person's name."""
    name = str(name or "").strip()
    if name == AUTO_ANNOTATOR:
        return RULE
    if name.startswith(MODEL_ANNOTATOR_PREFIX):
        return MODEL
    return None


def proposal_source(row: Mapping[str, Any] | None) -> str | None:
    """Where an unconfirmed row came from: "rule" (HU rule), "model" (a trained localizer), or
    None for a person's box (or no row)."""
    return None if row is None else proposal_annotator(row.get("Annotator"))


def is_proposal(row: Mapping[str, Any] | None) -> bool:
    """A stored row that pre-annotation wrote (the HU rule's `auto`, or a trained localizer's
    `model:<run>`) and no person has confirmed or edited yet."""
    return proposal_source(row) is not None


def confirm_proposal(store: BoxStore, volume: Volume, z: int, annotator: str) -> dict | None:
    """Re-save the proposal (rule or model) of slice z unchanged under `annotator` (a person accepted it).

    Returns the new row; None when the slice holds no proposal or the name is itself a proposal's
    (`auto`, `model:...`) or empty.
    """
    row = store.get(volume.slice_ids[z])
    if not is_proposal(row) or not (annotator or "").strip() or proposal_annotator(annotator) is not None:
        return None
    return save_box(store, volume, z, row_box(row), annotator)


def requested_slice(request: Mapping[str, Any] | None) -> tuple[str, int] | None:
    """(volume id, z) from a jump request {"volume": id, "slice": z} (session state or query params)."""
    if not request:
        return None
    volume, z = str(request.get("volume") or "").strip(), str(request.get("slice", "")).strip()
    if not volume or not z.isdigit():
        return None
    return volume, int(z)


def requested_entry(paths: Iterable[Any], target: Any) -> int | None:
    """Index of the volume path that is the same file or folder as `target` (the request's path)."""
    from pathlib import Path

    if not target:
        return None
    wanted = Path(str(target)).resolve()
    for index, path in enumerate(paths):
        if Path(path).resolve() == wanted:
            return index
    return None
