"""Overlay layers for the Viewer: ground truth from core.demo, annotated boxes, saved predictions
(core.predictions), and a hook that other pages use to feed masks and CAM heatmaps.

Hook: `register_overlay(volume_id, name, OverlayLayer(...))` stores the layer in session state; the
Viewer shows a toggle and an opacity slider for every layer registered for the volume it shows.

Layer data read from files is cached by (path, modification time) and never mutated: the same
object comes back on every rerun, so the slice viewer's frame cache (keyed by the layers' data
identity) keeps hitting and the browser payload stays byte-identical.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import streamlit as st

from core import predictions
from core.errors import SlicewiseError
from core.overlay import prediction_layers as prediction_layers_of
from core.render import OverlayLayer
from core.view_payload import heatmap_to_uint8
from core.volume import Volume

HOOK_KEY = "viewer_overlays"

# Default look of the layers the Viewer knows by name: colour, opacity, mask style.
STYLES: dict[str, tuple[tuple[int, int, int], float, str]] = {
    "Lung mask (truth)": ((0, 200, 80), 0.35, "both"),
    "Lesion mask (truth)": ((255, 60, 200), 0.6, "fill"),
    "Lung boxes (truth)": ((255, 210, 0), 1.0, "fill"),
    "Annotated boxes": ((0, 200, 255), 1.0, "fill"),
}
TRUTH_BOXES, ANNOTATED_BOXES = "Lung boxes (truth)", "Annotated boxes"


def register_overlay(volume_id: str, name: str, layer: OverlayLayer) -> None:
    """Make `layer` available in the Viewer for the volume `volume_id` (replaces one of that name)."""
    st.session_state.setdefault(HOOK_KEY, {}).setdefault(str(volume_id), {})[name] = layer


def registered_overlays(volume_id: str) -> dict[str, OverlayLayer]:
    return dict(st.session_state.get(HOOK_KEY, {}).get(str(volume_id), {}))


def truth_layers(truth) -> dict[str, OverlayLayer]:
    """Ground-truth layers from a core.demo Truth (lung mask, lesion mask, lung boxes)."""
    if truth is None:
        return {}
    found = {
        "Lung mask (truth)": ("mask", getattr(truth, "lung_mask", None)),
        "Lesion mask (truth)": ("mask", getattr(truth, "lesion_mask", None)),
        TRUTH_BOXES: ("boxes", _non_empty(getattr(truth, "boxes", None))),
    }
    return {name: _styled(name, kind, data) for name, (kind, data) in found.items() if data is not None}


def _non_empty(boxes):
    return boxes if boxes is not None and len(boxes) else None


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


@st.cache_resource(max_entries=8, show_spinner=False)
def _annotated_boxes(csv_path: str, mtime_ns: int, volume_id: str) -> dict:
    from core.annotations import BoxStore

    rows = BoxStore(csv_path).for_volume(volume_id)
    return {int(z): (r["Xmin"], r["Ymin"], r["Xmax"], r["Ymax"]) for z, r in rows.items()}


def annotated_box_layer(csv_path: Path, volume: Volume) -> dict[str, OverlayLayer]:
    """Boxes saved in the annotation CSV for this volume, by slice index."""
    mtime = _mtime_ns(Path(csv_path))
    if mtime is None or not Path(csv_path).is_file():
        return {}
    boxes = _annotated_boxes(str(csv_path), mtime, volume.volume_id)
    return {ANNOTATED_BOXES: _styled(ANNOTATED_BOXES, "boxes", boxes)} if boxes else {}


@st.cache_resource(max_entries=16, show_spinner=False)
def _stored_prediction(_found: predictions.PredictionSet, sidecar: str, mtime_ns: int):
    """The stored set, its heatmap kept as uint8 0-255 (a quarter of float32's memory; the browser
    gets these 256 levels, core.render draws them alike), read slice by slice (never whole at float32)."""
    return predictions.load_prediction(_found, heatmap_as=heatmap_to_uint8)


def prediction_layers(volume: Volume, runs_root: Path | None = None,
                      ) -> tuple[dict[str, OverlayLayer], dict[str, str], list[str]]:
    """(layers, HTML note per layer: label, when predicted, stale, problems) of the volume's saved
    predictions."""
    problems: list[str] = []
    found = predictions.list_prediction_sets(volume.volume_id, runs_root,
                                             on_error=lambda exc: problems.append(str(exc)))
    layers, notes = {}, {}
    for position, saved in enumerate(found):
        try:
            mtime = _mtime_ns(saved.sidecar or saved.path)
            stored = _stored_prediction(saved, str(saved.sidecar), mtime if mtime is not None else -1)
        except SlicewiseError as exc:
            problems.append(str(exc))
            continue
        for name, layer in prediction_layers_of(saved, stored, position).items():
            layers[name] = layer
            notes[name] = prediction_note_html(saved, layer)
    return layers, notes, problems


def prediction_note_html(saved: predictions.PredictionSet, layer: OverlayLayer) -> str:
    """Swatch, full label (the toggle's label may be cut), when predicted; a stale set says why."""
    when = html.escape(saved.created.replace("T", " ").replace("+00:00", " UTC"))
    text = f"{swatch(layer.colour, layer.kind)}{html.escape(saved.label)} · predicted {when}"
    if saved.stale:
        text += (f'<br><span style="color:#c25400;font-weight:600">⚠ stale: {html.escape(saved.stale_reason)}'
                 " — predict again on Predict &amp; review</span>")
    return f'<div style="font-size:0.8rem;opacity:0.85;margin-top:-0.6rem">{text}</div>'


def _styled(name: str, kind: str, data) -> OverlayLayer:
    colour, opacity, style = STYLES.get(name, ((255, 0, 0), 0.5, "fill"))
    return OverlayLayer(kind, data, colour=colour, opacity=opacity, visible=False, label=name, style=style)


def available_layers(volume: Volume, truth, csv_path: Path, runs_root: Path | None = None,
                     ) -> tuple[dict[str, OverlayLayer], dict[str, str], list[str]]:
    """Every layer the Viewer can show for `volume`, a note per layer where there is one (saved
    predictions: when, stale), and problems met while collecting them."""
    layers = truth_layers(truth)
    problems = []
    try:
        layers.update(annotated_box_layer(csv_path, volume))
    except SlicewiseError as exc:
        problems.append(str(exc))
    predicted, notes, more = prediction_layers(volume, runs_root)
    layers.update(predicted)
    layers.update(registered_overlays(volume.volume_id))
    return layers, notes, problems + more


def swatch(colour: Iterable[int], kind: str = "boxes") -> str:
    """An inline HTML colour sample: an outlined square for boxes, a filled one for masks."""
    r, g, b = (int(c) for c in colour)
    fill = "transparent" if kind == "boxes" else f"rgb({r},{g},{b})"
    return (f'<span style="display:inline-block;width:0.8em;height:0.8em;border:3px solid rgb({r},{g},{b});'
            f'background:{fill};vertical-align:-0.05em;margin-right:0.3em"></span>')


def legend_html(entries: Iterable[tuple[str, Iterable[int], str]]) -> str:
    """`(text, colour, kind)` entries -> one line of swatches with their meaning."""
    parts = [f'<span style="white-space:nowrap;margin-right:0.9em">{swatch(colour, kind)}{html.escape(text)}'
             f"</span>" for text, colour, kind in entries]
    return f'<div style="font-size:0.85rem;line-height:1.7">{" ".join(parts)}</div>'


def layer_legend(layers: Iterable[OverlayLayer], orientation: str = "axial") -> str:
    """Legend of the given layers (heatmaps have no single colour and are left out)."""
    def text(layer: OverlayLayer) -> str:
        axial_only = layer.kind == "boxes" and orientation != "axial"
        return f"{layer.label} (axial slices only)" if axial_only else layer.label

    return legend_html((text(layer), layer.colour, layer.kind) for layer in layers if layer.kind != "heatmap")
