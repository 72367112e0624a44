"""Overlay layers from stored predictions of any kind: boxes, masks, heatmaps (data, not pixels)."""

from __future__ import annotations

from core.predictions import PREDICTED_BOX_COLOURS, Prediction, PredictionSet
from core.render import OverlayLayer

MASK_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 80, 80), (80, 160, 255), (255, 200, 0))
LAYER_PREFIX = {"boxes": "Predicted boxes — ", "mask": "Predicted mask — ", "heatmap": "Heatmap — "}


def layer_name(kind: str, found: PredictionSet) -> str:
    return f"{LAYER_PREFIX[kind]}{found.label}"


def prediction_layers(found: PredictionSet, prediction: Prediction, position: int) -> dict[str, OverlayLayer]:
    """The Viewer's layers (hidden until toggled) for one stored set, by layer name.

    `position` is the set's place in `core.predictions.list_prediction_sets` order: it picks
    a stable colour per set.
    """
    layers: dict[str, OverlayLayer] = {}
    if prediction.boxes is not None:
        colour = PREDICTED_BOX_COLOURS[position % len(PREDICTED_BOX_COLOURS)]
        name = layer_name("boxes", found)
        layers[name] = OverlayLayer("boxes", prediction.boxes, colour=colour, opacity=1.0, visible=False,
                                    label=name)
    if prediction.mask is not None:
        colour = MASK_COLOURS[position % len(MASK_COLOURS)]
        name = layer_name("mask", found)
        layers[name] = OverlayLayer("mask", prediction.mask, colour=colour, opacity=0.45, visible=False,
                                    label=name, style="both")
    if prediction.heatmap is not None:
        name = layer_name("heatmap", found)
        layers[name] = OverlayLayer("heatmap", prediction.heatmap, opacity=0.5, visible=False, label=name,
                                    threshold=0.05)
    return layers
