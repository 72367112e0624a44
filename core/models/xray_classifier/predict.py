"""X-ray classifier prediction: label, probabilities and a heatmap (CAM, Grad-CAM, Grad-CAM++) per image.

`predict(volume)` takes a one-slice Volume of any size; the heatmap has the image's original shape
(1, H, W). `predict_many(volumes)` runs the network in batches. Several checkpoints (an ensemble)
average their probabilities and their heatmaps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.errors import VolumeReadError
from core.infer import Prediction
from core.models.xray_classifier.cam import METHODS, GradCams, cam_cells, normalise, to_original
from core.models.xray_classifier.net import (
    FAMILY,
    XrayClassifier,
    build_model,
    eval_image,
    grey_unit,
    to_network,
)


class _Member:
    def __init__(self, model: XrayClassifier, payload: dict[str, Any]) -> None:
        self.model = model
        pre = payload.get("preprocess", {})
        self.image_size = int(pre.get("image_size", payload["model_args"]["image_size"]))
        self.crop_fraction = float(pre.get("eval_crop_fraction", 1.0))
        self.classes = list(payload.get("classes") or [f"class_{i}" for i in range(model.head.out_features)])
        self._gradcams: GradCams | None = None

    @property
    def gradcams(self) -> GradCams:
        if self._gradcams is None:
            self._gradcams = GradCams(self.model)
        return self._gradcams


class XrayPredictor:
    family = FAMILY

    def __init__(self, members: list[_Member], device: str, name: str, cam_method: str = "cam") -> None:
        self.members, self.device, self.name = members, device, name
        self.classes = members[0].classes
        for m in members[1:]:
            if m.classes != self.classes:
                raise ValueError(f"ensemble members disagree on the classes: {self.classes} vs {m.classes}")
        self.cam_method = cam_method if cam_method in METHODS else "cam"

    def predict(self, volume: Any, cam_method: str | None = None) -> Prediction:
        return self.predict_many([volume], cam_method=cam_method)[0]

    def predict_many(
        self, volumes: Sequence[Any], batch_size: int = 16, cam_method: str | None = None
    ) -> list[Prediction]:
        """One Prediction per one-slice Volume, the network run `batch_size` images at a time."""
        method = cam_method or self.cam_method
        if method not in METHODS:
            raise ValueError(f"unknown cam_method {method!r}; use one of {', '.join(METHODS)}")
        greys = [_grey_of(v) for v in volumes]
        out: list[Prediction] = []
        for start in range(0, len(greys), max(1, batch_size)):
            chunk = greys[start : start + batch_size]
            started = time.perf_counter()
            probs, heats = self._predict_chunk(chunk, method)
            seconds = (time.perf_counter() - started) / max(1, len(chunk))
            for p, heat in zip(probs, heats, strict=True):
                k = int(np.argmax(p))
                out.append(
                    Prediction(
                        family=self.family,
                        model=self.name,
                        label=self.classes[k],
                        probabilities={c: float(p[i]) for i, c in enumerate(self.classes)},
                        heatmap=heat[None],
                        extras={"cam_method": method, "seconds": round(seconds, 4)},
                    )
                )
        return out

    def _predict_chunk(self, greys: list[np.ndarray], method: str) -> tuple[np.ndarray, list[np.ndarray]]:
        probs_sum: np.ndarray | None = None
        heats_sum: list[np.ndarray] | None = None
        for member in self.members:
            x = torch.stack([eval_image(g, member.image_size, member.crop_fraction) for g in greys])
            x = to_network(x).to(self.device)
            with torch.no_grad():
                feats = member.model.features(x)
                probs = torch.softmax(member.model.logits_from_features(feats).float(), dim=1)
            cls = probs.argmax(dim=1)
            if method == "cam":
                cells = cam_cells(feats.float(), member.model.head.weight.float(), cls)
            else:
                cells = member.gradcams.cells(x, cls, method)
            heats = [
                to_original(cells[i].cpu(), g.shape, member.image_size, member.crop_fraction)
                for i, g in enumerate(greys)
            ]
            p = probs.cpu().numpy()
            probs_sum = p if probs_sum is None else probs_sum + p
            heats_sum = heats if heats_sum is None else [a + b for a, b in zip(heats_sum, heats, strict=True)]
        n = len(self.members)
        heats_out = heats_sum if n == 1 else [normalise(torch.from_numpy(h)).numpy() for h in heats_sum]
        return probs_sum / n, heats_out


def _grey_of(volume: Any) -> np.ndarray:
    array = np.asarray(volume.array)
    if array.ndim != 3 or array.shape[0] != 1:
        where = getattr(volume, "source", "") or getattr(volume, "volume_id", "input")
        raise VolumeReadError(
            where, f"the X-ray classifier takes a 2D image (one slice), got shape {array.shape}"
        )
    return grey_unit(array[0])


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str) -> XrayPredictor:
    members = []
    for payload in payloads:
        model = build_model(**payload["model_args"])
        model.load_state_dict(payload["state_dict"])
        model.to(device).eval()
        members.append(_Member(model, payload))
    method = str(payloads[0].get("cam_method") or payloads[0].get("settings", {}).get("cam_method", "cam"))
    return XrayPredictor(members, device, name, method)
