"""Overlay layers for the Viewer: ground truth from core.demo, annotated boxes, and a hook that
other pages (Predict & review) use to feed predicted boxes, masks and CAM heatmaps.

Hook: `register_overlay(volume_id, name, OverlayLayer(...))` stores the layer in session state; the
Viewer shows a toggle and an opacity slider for every layer registered for the volume it shows.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.errors import SlicewiseError
from core.render import OverlayLayer
from core.volume import Volume

HOOK_KEY = "viewer_overlays"

# Default look of the layers the Viewer knows by name: colour, opacity, mask style.
STYLES: dict[str, tuple[tuple[int, int, int], float, str]] = {
    "Lung mask (truth)": ((0, 200, 80), 0.35, "both"),
    "Lesion mask (truth)": ((255, 60, 200), 0.6, "fill"),
    "Lung boxes (truth)": ((255, 210, 0), 1.0, "fill"),
    "Annotated boxes": ((0, 200, 255), 1.0, "fill"),
}


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
        "Lung boxes (truth)": ("boxes", _non_empty(getattr(truth, "boxes", None))),
    }
    return {name: _styled(name, kind, data) for name, (kind, data) in found.items() if data is not None}


def _non_empty(boxes):
    return boxes if boxes is not None and len(boxes) else None


def annotated_box_layer(csv_path: Path, volume: Volume) -> dict[str, OverlayLayer]:
    """Boxes saved in the annotation CSV for this volume, by slice index."""
    if not Path(csv_path).is_file():
        return {}
    from core.annotations import BoxStore

    rows = BoxStore(csv_path).for_volume(volume.volume_id)
    boxes = {int(z): (r["Xmin"], r["Ymin"], r["Xmax"], r["Ymax"]) for z, r in rows.items()}
    return {"Annotated boxes": _styled("Annotated boxes", "boxes", boxes)} if boxes else {}


def _styled(name: str, kind: str, data) -> OverlayLayer:
    colour, opacity, style = STYLES.get(name, ((255, 0, 0), 0.5, "fill"))
    return OverlayLayer(kind, data, colour=colour, opacity=opacity, visible=False, label=name, style=style)


def available_layers(volume: Volume, truth, csv_path: Path) -> tuple[dict[str, OverlayLayer], list[str]]:
    """Every layer the Viewer can show for `volume`, and problems met while collecting them."""
    layers = truth_layers(truth)
    problems = []
    try:
        layers.update(annotated_box_layer(csv_path, volume))
    except SlicewiseError as exc:
        problems.append(str(exc))
    layers.update(registered_overlays(volume.volume_id))
    return layers, problems
