"""Brain MRI grade prediction for one patient folder: grade, probabilities, per-slice probabilities, Grad-CAM.

`predict(folder)` (or a Volume / path of one of the patient's sequence files) uses the tumour
slices when the folder has a `_seg` mask, else every brain slice; each is classified, the
patient's probabilities are the mean of the slices', and Grad-CAM of the predicted grade is
computed per used slice, resized back to the slice and normalised over the volume to [0, 1]
(the strongest evidence anywhere in the patient is 1, so weak slices stay dim).
`slice_probabilities` has one row per slice of the volume, NaN rows for slices not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import VolumeReadError
from core.infer import Prediction
from core.models.brain_mri.data import CLASSES, PatientInput, input_slices, load_patient, resize_slices
from core.models.brain_mri.net import FAMILY, build_model, grad_cam
from core.multi_sequence import load_sequences


def patient_folder(item: Any) -> Path:
    """The patient folder of a folder path, a sequence file's path, or a Volume loaded from one."""
    source = getattr(item, "source", None) if not isinstance(item, str | Path) else item
    if not source:
        raise VolumeReadError(
            str(getattr(item, "volume_id", item)),
            "brain_mri predicts a patient folder; this volume has no source file",
        )
    path = Path(source)
    return path if path.is_dir() else path.parent


class BrainGradePredictor:
    family = FAMILY

    def __init__(self, model: nn.Module, meta: dict[str, Any], device: str, name: str) -> None:
        self.model, self.meta, self.device, self.name = model, meta, device, name

    def load_input(self, path: str | Path) -> Any:
        """The patient's FLAIR Volume (its id and geometry key the stored prediction)."""
        return load_sequences(patient_folder(path)).reference

    def predict(self, item: Any, batch_size: int = 32) -> Prediction:
        patient = load_patient(patient_folder(item))
        used = input_slices(patient, int(self.meta["min_tumour_pixels"]))
        depth, height, width = patient.stack.shape[1:]
        slice_probs = np.full((depth, len(CLASSES)), np.nan, np.float32)
        heatmap = np.zeros((depth, height, width), np.float32)
        if used.size:
            probs, cams = self._classify(patient, used, batch_size)
            slice_probs[used] = probs
            heatmap[used] = self._to_slices(cams, height, width)
        mean = np.nanmean(slice_probs, axis=0) if used.size else np.full(len(CLASSES), 0.5)
        probabilities = {c: float(p) for c, p in zip(CLASSES, mean, strict=True)}
        label = max(probabilities, key=probabilities.get)
        return Prediction(
            family=self.family,
            model=self.name,
            label=label,
            probabilities=probabilities,
            slice_probabilities=slice_probs,
            classes=CLASSES,
            heatmap=heatmap,
            extras={
                "slices_used": "tumour (mask)"
                if patient.seg is not None and (patient.seg > 0).any()
                else "brain (no mask)",
                "n_slices_used": int(used.size),
                "heatmap": "Grad-CAM " + self.meta["cam_layer"],
                "aggregation": "mean of slice probabilities",
            },
        )

    def _classify(
        self, patient: PatientInput, used: np.ndarray, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slice probabilities (n, 2) and Grad-CAMs (n, S, S) of the predicted patient grade, per slice."""
        inputs = torch.from_numpy(resize_slices(patient.stack, used, int(self.meta["image_size"])))
        probs = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start : start + batch_size].to(self.device)
                probs.append(torch.softmax(self.model(batch).float(), 1).cpu())
        probs_t = torch.cat(probs)
        target = int(probs_t.mean(0).argmax())
        cams = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size].to(self.device)
            wanted = torch.full((len(batch),), target, dtype=torch.long, device=self.device)
            cams.append(grad_cam(self.model, batch, self.meta["cam_layer"], wanted)[1].cpu())
        return probs_t.numpy(), torch.cat(cams).numpy()

    @staticmethod
    def _to_slices(cams: np.ndarray, height: int, width: int) -> np.ndarray:
        """Resize the CAMs to the slice and normalise over the volume: [0, 1], the peak at 1."""
        resized = nn.functional.interpolate(
            torch.from_numpy(cams)[:, None], size=(height, width), mode="bilinear", align_corners=False
        )[:, 0].numpy()
        resized = np.clip(resized, 0.0, None)
        peak = float(resized.max())
        return resized / peak if peak > 0 else resized


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str) -> BrainGradePredictor:
    """One checkpoint (the family has no ensemble)."""
    if len(payloads) != 1:
        raise ValueError(f"brain_mri predicts from one checkpoint, got {len(payloads)}")
    payload = payloads[0]
    model = build_model(**payload["model_args"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    meta = {
        "image_size": int(payload["model_args"]["image_size"]),
        "min_tumour_pixels": int(payload.get("min_tumour_pixels", 1)),
        "cam_layer": str(payload.get("cam_layer", "layer4")),
    }
    return BrainGradePredictor(model, meta, device, name)
