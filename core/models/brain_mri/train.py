"""Brain MRI grade training: LightningModule, LightningDataModule, evaluation.json (SPEC 5E).

Cross-entropy on tumour slices, Adam. Validation logs slice-level accuracy (`val_acc`, the
monitored metric) and patient-level accuracy (`val_patient_acc`: a patient's HGG probability
is the mean of its slices'). After the fit, the best checkpoint's weights are evaluated on
the validation patients and `<run>/evaluation.json` is written (one row per patient).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from core.atomic import atomic_write_json
from core.errors import TrainingDataError
from core.models.brain_mri.data import (
    CLASSES,
    PatientSlices,
    SliceDataset,
    index_brats,
    prepare_slices,
    split_patients,
)
from core.models.brain_mri.net import build_model, load_imagenet_weights, model_args

log = logging.getLogger("slicewise.train")


def patient_probabilities(
    slice_probs: np.ndarray, patient_of_slice: np.ndarray, n_patients: int
) -> np.ndarray:
    """(n_patients,) HGG probability: the mean of each patient's slice probabilities (NaN without slices)."""
    sums = np.bincount(patient_of_slice, weights=slice_probs, minlength=n_patients)
    counts = np.bincount(patient_of_slice, minlength=n_patients)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def flip_batch(x: torch.Tensor) -> torch.Tensor:
    """Random left-right and up-down flips per slice (global RNG: reseeded per epoch by the engine)."""
    n = x.shape[0]
    lr = (torch.rand(n) < 0.5).to(x.device)[:, None, None, None]
    ud = (torch.rand(n) < 0.5).to(x.device)[:, None, None, None]
    x = torch.where(lr, x.flip(-1), x)
    return torch.where(ud, x.flip(-2), x)


class BrainGradeModule(pl.LightningModule):
    def __init__(
        self, settings: dict[str, Any], val_patients: list[PatientSlices], run_dir: Path, skipped: list[str]
    ) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.model_args = model_args(settings)
        self.model = build_model(**self.model_args)
        self.notice = load_imagenet_weights(self.model, str(settings.get("weights_path", "")))
        self.val_patients = val_patients
        self.run_dir = Path(run_dir)
        self.skipped = list(skipped)
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        if self.settings.get("augment", True):
            x = flip_batch(x)
        loss = torch.nn.functional.cross_entropy(self.model(x).float(), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, patient = batch
        logits = self.model(x).float()
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self._val.append((torch.softmax(logits, 1)[:, 1].detach().cpu(), y.cpu(), patient.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        probs, labels, patients = (torch.cat(t).numpy() for t in zip(*self._val, strict=True))
        self._val.clear()
        self.log("val_acc", float(((probs >= 0.5) == labels).mean()))
        per_patient = patient_probabilities(probs, patients, len(self.val_patients))
        truth = np.array([p.patient.label for p in self.val_patients])
        seen = np.isfinite(per_patient)
        self.log("val_patient_acc", float(((per_patient[seen] >= 0.5) == truth[seen]).mean()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(),
            lr=float(self.settings["lr"]),
            weight_decay=float(self.settings.get("weight_decay", 0.0)),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "classes": list(CLASSES),
            "normalisation": "per-sequence z-score over the brain (non-zero voxels), clipped to [-5, 5]",
            "sequences": ["flair", "t1", "t1ce", "t2"],
            "aggregation": "mean of slice probabilities",
            "min_tumour_pixels": int(self.settings.get("min_tumour_pixels", 1)),
            "cam_layer": str(self.settings.get("cam_layer", "layer4")),
        }

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            write_evaluation(self, self.run_dir / "evaluation.json")


@torch.no_grad()
def _slice_probabilities(
    model: torch.nn.Module, dataset: SliceDataset, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    probs, patients = [], []
    for x, _, patient in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        probs.append(torch.softmax(model(x.to(device)).float(), 1)[:, 1].cpu())
        patients.append(patient)
    return torch.cat(probs).numpy(), torch.cat(patients).numpy()


def _best_weights(module: BrainGradeModule) -> tuple[torch.nn.Module, str]:
    """A copy of the network with the best checkpoint's weights (the module's own when there is none)."""
    callback = module.trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    model = build_model(**module.model_args)
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
        return model, Path(best).name
    model.load_state_dict(module.model.state_dict())
    return model, "last weights"


def write_evaluation(module: BrainGradeModule, path: Path) -> dict[str, Any]:
    """Patient-level results of the best weights on the validation patients -> evaluation.json."""
    model, source = _best_weights(module)
    device = module.device
    model.to(device).eval()
    dataset = SliceDataset(module.val_patients)
    probs, patient_of = _slice_probabilities(model, dataset, device, int(module.settings["batch_size"]))
    per_patient = patient_probabilities(probs, patient_of, len(module.val_patients))
    cases, matrix = [], [[0, 0], [0, 0]]
    for i, item in enumerate(module.val_patients):
        p_hgg = float(per_patient[i])
        predicted = CLASSES[int(p_hgg >= 0.5)]
        matrix[item.patient.label][CLASSES.index(predicted)] += 1
        cases.append(
            {
                "id": item.patient.patient_id,
                "true": item.patient.grade,
                "predicted": predicted,
                "probability": round(max(p_hgg, 1 - p_hgg), 4),
                "p_HGG": round(p_hgg, 4),
                "slices": int((patient_of == i).sum()),
                "correct": predicted == item.patient.grade,
            }
        )
    labels = dataset.labels()
    evaluation = {
        "checkpoint": source,
        "confusion_matrix": {"classes": list(CLASSES), "matrix": matrix, "level": "patient"},
        "roc": _roc([c["p_HGG"] for c in cases], [c["true"] == "HGG" for c in cases]),
        "summary": {
            "patient_accuracy": float(np.mean([c["correct"] for c in cases])) if cases else 0.0,
            "slice_accuracy": float(((probs >= 0.5) == labels).mean()) if probs.size else 0.0,
            "val_patients": len(cases),
            "val_slices": int(probs.size),
            "skipped_patients": len(module.skipped),
        },
        "cases": cases,
        "skipped": module.skipped,
    }
    atomic_write_json(path, evaluation)
    return evaluation


def _roc(scores: list[float], positive: list[bool]) -> dict[str, Any]:
    """Patient-level ROC of the HGG probability (trapezoid AUC); empty when one grade is absent."""
    scores_arr, pos = np.asarray(scores, float), np.asarray(positive, bool)
    if pos.all() or not pos.any():
        return {}
    thresholds = np.r_[np.inf, np.sort(np.unique(scores_arr))[::-1]]
    tpr = [float((scores_arr[pos] >= t).mean()) for t in thresholds]
    fpr = [float((scores_arr[~pos] >= t).mean()) for t in thresholds]
    return {"fpr": fpr, "tpr": tpr, "auc": float(np.trapezoid(tpr, fpr))}


class BrainDataModule(pl.LightningDataModule):
    def __init__(
        self, train: list[PatientSlices], val: list[PatientSlices], settings: dict[str, Any]
    ) -> None:
        super().__init__()
        self.settings = settings
        self.train_set, self.val_set = SliceDataset(train), SliceDataset(val)
        self._loaders: dict[str, DataLoader] = {}
        self._loaders_for: object = None

    def _kwargs(self) -> dict[str, Any]:
        workers = int(self.settings["num_workers"])
        return {
            "batch_size": int(self.settings["batch_size"]),
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _cached(self, name: str, build: Any) -> DataLoader:
        """One loader per fit (the engine asks again every epoch; new loaders would restart workers)."""
        if self._loaders_for is not self.trainer:
            self._loaders, self._loaders_for = {}, self.trainer
        if name not in self._loaders:
            self._loaders[name] = build()
        return self._loaders[name]

    def train_dataloader(self) -> DataLoader:
        drop_last = len(self.train_set) > int(self.settings["batch_size"])
        generator = torch.Generator().manual_seed(int(self.settings["seed"]))
        return self._cached(
            "train",
            lambda: DataLoader(
                self.train_set, shuffle=True, drop_last=drop_last, generator=generator, **self._kwargs()
            ),
        )

    def val_dataloader(self) -> DataLoader:
        return self._cached("val", lambda: DataLoader(self.val_set, shuffle=False, **self._kwargs()))


def make_training(
    settings: dict[str, Any], data: Path, run_dir: Path
) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """(module, datamodule) for a BraTS folder; unusable patients are skipped and logged."""
    index = index_brats(Path(data))
    prepared, skipped = prepare_slices(
        index,
        Path(run_dir) / "slices",
        int(settings["image_size"]),
        int(settings.get("min_tumour_pixels", 1)),
    )
    for message in skipped:
        log.warning(message)
    grades = {p.patient.grade for p in prepared}
    if len(grades) < 2:
        raise TrainingDataError(
            f"{index.root}: only {sorted(grades) or 'no'} patients usable "
            f"({len(prepared)}); need both LGG and HGG patients"
        )
    by_id = {p.patient.patient_id: p for p in prepared}
    train_p, val_p = split_patients(
        [p.patient for p in prepared], float(settings["val_fraction"]), int(settings["seed"])
    )
    train, val = [by_id[p.patient_id] for p in train_p], [by_id[p.patient_id] for p in val_p]
    log.info(
        "brain MRI %s: %d train / %d val patients, %d / %d tumour slices",
        index.root,
        len(train),
        len(val),
        sum(len(p.z) for p in train),
        sum(len(p.z) for p in val),
    )
    module = BrainGradeModule(settings, val, Path(run_dir), skipped)
    log.info(module.notice)
    return module, BrainDataModule(train, val, settings)
