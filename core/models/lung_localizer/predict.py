"""Lung localizer prediction: boxes per slice from one checkpoint or several (boxes averaged)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from core.infer import Prediction
from core.models.lung_localizer.net import FAMILY, build_model, prepare_input


class LungBoxPredictor:
    """Boxes per slice from one checkpoint or an ensemble of several (their boxes averaged)."""

    family = FAMILY

    def __init__(self, members: list[tuple[nn.Module, dict[str, Any]]], device: str, name: str) -> None:
        self.members = members
        self.device = device
        self.name = name

    def predict(self, volume: Any) -> Prediction:
        return Prediction(family=self.family, model=self.name, boxes=self.predict_volume(volume))

    @torch.no_grad()
    def predict_volume(self, volume: Any, batch_size: int = 16) -> np.ndarray:
        """(z, 4) Xmin, Ymin, Xmax, Ymax as fractions of the slice width/height."""
        boxes = np.mean(
            [self._member_boxes(model, meta, volume, batch_size) for model, meta in self.members], axis=0
        )
        return boxes.astype(np.float32)

    def _member_boxes(
        self, model: nn.Module, meta: dict[str, Any], volume: Any, batch_size: int
    ) -> np.ndarray:
        inputs = prepare_input(volume, meta)
        out = []
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start : start + batch_size].to(self.device, non_blocking=True)
            out.append(model(batch).float().cpu())
        boxes = torch.cat(out).numpy() / float(meta["image_size"])
        return np.clip(boxes, 0.0, 1.0)


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str) -> LungBoxPredictor:
    """`payloads`: checkpoints' `slicewise` dicts with their `state_dict` (model weights only)."""
    members = []
    for payload in payloads:
        model = build_model(**payload["model_args"])
        model.load_state_dict(payload["state_dict"])
        model.to(device).eval()
        stats = payload["stats"]
        meta = {"image_size": payload["model_args"]["image_size"], "mean": stats["mean"], "std": stats["std"]}
        members.append((model, meta))
    return LungBoxPredictor(members, device, name)
