"""CT classifier prediction: label, probabilities and a 3D Grad-CAM in the input volume's geometry."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from core.infer import Prediction
from core.models.ct_classifier.net import FAMILY, build_model, cam_cell_centres
from core.models.ct_classifier.preprocess import Preprocessing, cam_to_input, cam_to_volume, preprocess_array

HEATMAP_METHOD = "Grad-CAM of the last conv block, for the predicted class"


def confidence_text(label: str, probability: float) -> str:
    """"93 % confident abnormal" (the reference's wording), from the predicted class's probability."""
    return f"{100 * probability:.0f} % confident {label}"


def grad_cam(model: nn.Module, x: torch.Tensor, sign: float) -> tuple[np.ndarray, float]:
    """(Grad-CAM over the last conv block's cells, the logit) for one input (1, 1, d, h, w).

    Selvaraju et al., "Grad-CAM", ICCV 2017: channel weights are the spatial mean of the gradient of
    the class score (here `sign` * logit: +1 abnormal, -1 normal) w.r.t. the activations; the map is
    ReLU(sum of weighted activations), scaled so its peak is 1 (all zero when nothing is positive).
    """
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.register_hook(lambda grad: store.__setitem__("grad", grad))
        store["act"] = output

    handle = model.last_conv_activation.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logit = model(x)
            model.zero_grad(set_to_none=True)
            (sign * logit.sum()).backward()
    finally:
        handle.remove()
    act, grad = store["act"][0].detach().float(), store["grad"][0].float()
    weights = grad.mean(dim=(1, 2, 3))
    cam = torch.relu((weights[:, None, None, None] * act).sum(0)).cpu().numpy()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32), float(logit.item())


def peak_one(heat: np.ndarray) -> np.ndarray:
    """Clipped to [0, 1] with the peak at 1 (cell centres fall between voxels, so resampling lowers it)."""
    heat = np.clip(heat, 0.0, None)
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat).astype(np.float32)


class CTClassifierPredictor:
    """One checkpoint, or several averaged (probabilities and Grad-CAMs)."""

    family = FAMILY

    def __init__(self, members: list[tuple[nn.Module, dict[str, Any]]], device: str, name: str) -> None:
        self.members, self.device, self.name = members, device, name
        self.classes = tuple(members[0][1]["classes"])
        self.preprocessing = Preprocessing(**{k: v for k, v in members[0][1]["preprocessing"].items()
                                              if k != "version"})

    def network_input(self, volume: Any) -> np.ndarray:
        """The preprocessed volume (depth, size, size) in [0, 1], as the network sees it (the montage)."""
        return preprocess_array(volume.array, self.preprocessing, where=volume.source or volume.volume_id)

    def predict(self, volume: Any) -> Prediction:
        prepared = self.network_input(volume)
        x = torch.from_numpy(prepared)[None, None].to(self.device)
        p_positive = float(np.mean([torch.sigmoid(self._logit(m, x)).item() for m, _ in self.members]))
        positive = p_positive >= 0.5
        label = self.classes[int(positive)]
        cams = [grad_cam(model, x, 1.0 if positive else -1.0)[0] for model, _ in self.members]
        cam = np.mean(cams, axis=0)
        cam = cam / cam.max() if cam.max() > 0 else cam
        offset, step = cam_cell_centres(self.members[0][1]["model_args"]["padding"])
        heatmap = peak_one(cam_to_volume(cam, volume.shape, self.preprocessing, offset, step))
        probabilities = {self.classes[0]: 1.0 - p_positive, self.classes[1]: p_positive}
        confidence = probabilities[label]
        return Prediction(
            family=self.family, model=self.name, label=label, probabilities=probabilities, heatmap=heatmap,
            extras={"confidence_text": confidence_text(label, confidence), "heatmap_method": HEATMAP_METHOD,
                    "cam_cells": list(cam.shape)},
        )

    def input_heatmap(self, volume: Any) -> tuple[np.ndarray, np.ndarray]:
        """(network input, Grad-CAM on the input grid) for the montage with the heatmap drawn over it."""
        prepared = self.network_input(volume)
        x = torch.from_numpy(prepared)[None, None].to(self.device)
        model, meta = self.members[0]
        positive = torch.sigmoid(self._logit(model, x)).item() >= 0.5
        cam, _ = grad_cam(model, x, 1.0 if positive else -1.0)
        offset, step = cam_cell_centres(meta["model_args"]["padding"])
        return prepared, peak_one(cam_to_input(cam, self.preprocessing, offset, step))

    @staticmethod
    @torch.no_grad()
    def _logit(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).float()


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str) -> CTClassifierPredictor:
    """`payloads`: the checkpoints' `slicewise` dicts with their `state_dict` (model weights only)."""
    members = []
    for payload in payloads:
        model = build_model(**payload["model_args"])
        model.load_state_dict(payload["state_dict"])
        model.to(device).eval()
        members.append((model, payload))
    return CTClassifierPredictor(members, device, name)
