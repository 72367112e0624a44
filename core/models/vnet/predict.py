"""Two-stage VNet prediction: `predict(volume)` -> Prediction(mask) with the input volume's shape."""

from __future__ import annotations

from typing import Any

import torch

from core.infer import Prediction
from core.models.vnet.data import normalise
from core.models.vnet.net import FAMILY, build_model
from core.models.vnet.stages import segment_volume

DESCRIPTION_KEYS = ("pad_size", "crop_size", "locator_scale", "buffer", "threshold", "largest_component")


class VNetPredictor:
    """Pad, locate, crop, segment, place the crop's mask back, remove the padding (SPEC 5D)."""

    family = FAMILY

    def __init__(self, model: torch.nn.Module, description: dict[str, Any], device: str, name: str) -> None:
        self.model, self.description, self.device, self.name = model, description, device, name

    @torch.no_grad()
    def predict(self, volume: Any) -> Prediction:
        norm = self.description.get("normalise", {})
        image = normalise(volume.array, float(norm.get("low", 0.5)), float(norm.get("high", 99.5)))
        result = segment_volume(self.model, image, self.description, self.device)
        window = [[int(s.start), int(s.stop)] for s in result.window]
        extras = {
            "crop_window": window,
            "located": result.located is not None,
            "sliding_window": bool(result.sliding_window),
            "voxels": int(result.mask.sum()),
        }
        return Prediction(family=self.family, model=self.name, mask=result.mask, extras=extras)


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str) -> VNetPredictor:
    if len(payloads) != 1:
        raise ValueError(f"the vnet family predicts from one checkpoint, got {len(payloads)}")
    payload = payloads[0]
    missing = [k for k in DESCRIPTION_KEYS[:4] if k not in payload]
    if missing:
        raise KeyError(f"checkpoint lacks {missing} (not written by the vnet family's training)")
    model = build_model(**payload["model_args"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return VNetPredictor(
        model, {k: payload[k] for k in (*DESCRIPTION_KEYS, "normalise") if k in payload}, device, name
    )
