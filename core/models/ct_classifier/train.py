"""CT classifier training (SPEC 5C): LightningModule, data module, evaluation.json after the fit."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from core.atomic import atomic_write_json
from core.errors import TrainingDataError
from core.models.ct_classifier.data import (
    CTCase,
    CTDataSet,
    Preprocessed,
    default_cache_dir,
    discover,
    preprocess_cases,
)
from core.models.ct_classifier.evaluate import evaluation_report
from core.models.ct_classifier.net import build_model, model_args
from core.models.ct_classifier.preprocess import Preprocessing

log = logging.getLogger("slicewise.train")

ROTATION_ANGLES = (-20.0, -10.0, -5.0, 5.0, 10.0, 20.0)
PRELOAD_LIMIT_BYTES = 2 * 1024**3  # hold the preprocessed set in memory up to this size
PRECISE_BN_MAX_VOLUMES = 256


def rotate_in_plane(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each (1, d, h, w) volume of the batch about the depth axis by its angle; clip to [0, 1].

    Trilinear sampling, zeros outside (the reference used scipy.ndimage.rotate, cubic, cval 0); the
    depth coordinate is unchanged, so slices are not mixed.
    """
    rad = degrees.to(x.device, torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    theta = torch.zeros(x.shape[0], 3, 4, device=x.device, dtype=torch.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 2, 2] = 1.0
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).clamp_(0.0, 1.0).to(x.dtype)


def augmentation_angles(seed: int, epoch: int, batch_idx: int, n: int) -> torch.Tensor:
    """One of ±5, ±10, ±20 degrees per volume, drawn from (seed, epoch, batch): reproducible, resumable."""
    rng = np.random.default_rng([int(seed), int(epoch), int(batch_idx)])
    return torch.tensor(rng.choice(ROTATION_ANGLES, size=n), dtype=torch.float32)


class VolumeSet(Dataset):
    """Preprocessed volumes (1, depth, size, size) with labels, in memory or read from the cache."""

    def __init__(self, files: list[Path], labels: list[int], preload: bool) -> None:
        self.files = list(files)
        self.labels = torch.tensor(labels, dtype=torch.float32)
        self.arrays: list[np.ndarray] | None = [np.load(f) for f in self.files] if preload else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        array = self.arrays[index] if self.arrays is not None else np.load(self.files[index])
        return torch.from_numpy(array)[None], self.labels[index]


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch): the same order after a resume."""

    def __init__(self, n: int, seed: int, epoch: Any) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, int(self.epoch())]).permutation(self.n).tolist())


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, volumes: Dataset, batch_size: int, device: Any,
                           limit: int = PRECISE_BN_MAX_VOLUMES) -> None:
    """Set every BatchNorm's running statistics to the plain average over (up to `limit`) training
    volumes with the current weights ("precise BN": Wu & Johnson, "Rethinking 'Batch' in BatchNorm",
    2021). With batches of 2-4 volumes and few steps per epoch, the moving averages lag far behind the
    weights and the evaluation-mode network predicted one class for everything on the demo set."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(volumes) == 0:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    n = min(len(volumes), limit)
    for start in range(0, n, batch_size):
        x = torch.stack([volumes[i][0] for i in range(start, min(start + batch_size, n))])
        model(x.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def staircase_decay(rate: float, steps: int):
    """Keras ExponentialDecay(staircase=True) as a LambdaLR factor: rate ** (step // steps)."""
    return lambda step: rate ** (step // max(1, steps))


class CTClassifierModule(pl.LightningModule):
    """BCE on one logit, Adam with staircase exponential decay per step, accuracy as the metric."""

    def __init__(self, settings: dict[str, Any], info: dict[str, Any], run_dir: Path,
                 val_cases: list[CTCase], val_set: VolumeSet) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.model_args = model_args(settings)
        self.model = build_model(**self.model_args)
        self.info = info
        self.run_dir = Path(run_dir)
        self.val_cases, self.val_set = val_cases, val_set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, prefix: str) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y.float())
        acc = ((logits > 0).float() == y).float().mean()
        n = x.shape[0]
        if prefix == "val":
            self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log(f"{prefix}_acc", acc, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.settings["augment"]:
            seed = int(self.settings["seed"])
            angles = augmentation_angles(seed, self.current_epoch, batch_idx, x.shape[0])
            x = rotate_in_plane(x, angles)
        return self._step((x, y), "train")

    def on_validation_epoch_start(self) -> None:
        if self.settings["precise_bn"] and not self.trainer.sanity_checking:
            recalibrate_batch_norm(self.model, self.trainer.datamodule.train_set,
                                   int(self.settings["batch_size"]), self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=float(self.settings["lr"]))
        schedule = staircase_decay(float(self.settings["lr_decay_rate"]),
                                   int(self.settings["lr_decay_steps"]))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def describe(self) -> dict[str, Any]:
        return dict(self.info)

    def on_fit_end(self) -> None:
        """evaluation.json: the best checkpoint's prediction for every validation volume."""
        if not self.trainer.is_global_zero or len(self.val_set) == 0:
            return
        best = getattr(self.trainer.checkpoint_callback, "best_model_path", "") or ""
        state = None
        if best and Path(best).is_file():
            raw = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            state = {k.removeprefix("model."): v for k, v in raw.items() if k.startswith("model.")}
        probabilities = self._val_probabilities(state)
        report = evaluation_report(self.val_cases, probabilities, self.info["classes"], Path(best).name
                                   if best else "", self.info.get("problems", []))
        atomic_write_json(self.run_dir / "evaluation.json", report)

    @torch.no_grad()
    def _val_probabilities(self, state: dict[str, torch.Tensor] | None) -> np.ndarray:
        model = build_model(**self.model_args).to(self.device)
        model.load_state_dict(state if state is not None else self.model.state_dict())
        model.eval()
        out = []
        for start in range(0, len(self.val_set), 4):
            x = torch.stack([self.val_set[i][0] for i in range(start, min(start + 4, len(self.val_set)))])
            out.append(torch.sigmoid(model(x.to(self.device)).float()).cpu())
        return torch.cat(out).numpy()


class CTDataModule(pl.LightningDataModule):
    def __init__(self, train_set: VolumeSet, val_set: VolumeSet, settings: dict[str, Any]) -> None:
        super().__init__()
        self.train_set, self.val_set, self.settings = train_set, val_set, settings
        self._loaders: dict[str, DataLoader] = {}
        self._loaders_for: object = None

    def _kwargs(self) -> dict[str, Any]:
        workers = int(self.settings["num_workers"])
        return {"batch_size": int(self.settings["batch_size"]), "num_workers": workers,
                "persistent_workers": workers > 0, "pin_memory": torch.cuda.is_available()}

    def _cached(self, name: str, build: Any) -> DataLoader:
        """One loader per fit (Lightning re-requests them every epoch; see core.train.loop.fit)."""
        if self._loaders_for is not self.trainer:
            self._loaders, self._loaders_for = {}, self.trainer
        if name not in self._loaders:
            self._loaders[name] = build()
        return self._loaders[name]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = EpochShuffle(len(self.train_set), int(self.settings["seed"]),
                               lambda: trainer.current_epoch if trainer is not None else 0)
        drop_last = len(self.train_set) > int(self.settings["batch_size"])
        return self._cached("train", lambda: DataLoader(self.train_set, sampler=sampler, drop_last=drop_last,
                                                        **self._kwargs()))

    def val_dataloader(self) -> DataLoader:
        return self._cached("val", lambda: DataLoader(self.val_set, shuffle=False, **self._kwargs()))


def _cache_dir(settings: dict[str, Any]) -> Path:
    text = str(settings.get("cache_dir", "")).strip()
    return Path(text).expanduser() if text else default_cache_dir()


def _prepared(cases: list[CTCase], prep: Preprocessing, cache: Path, what: str, data: Path) -> Preprocessed:
    done = preprocess_cases(cases, prep, cache)
    labels = {c.label for c in done.cases}
    if what == "training" and labels != {0, 1}:
        raise TrainingDataError(f"{data}: no readable {what} volume left in one class after leaving out "
                                f"unreadable ones: {'; '.join(done.problems) or 'none found'}")
    if not done.cases:
        raise TrainingDataError(f"{data}: no readable {what} volume: {'; '.join(done.problems)}")
    return done


def _volume_set(done: Preprocessed, prep: Preprocessing) -> VolumeSet:
    nbytes = len(done.files) * int(np.prod(prep.shape)) * 4
    return VolumeSet(done.files, [c.label for c in done.cases], preload=nbytes <= PRELOAD_LIMIT_BYTES)


def prepare_data(settings: dict[str, Any], data: Path) -> tuple[CTDataSet, Preprocessed, Preprocessed]:
    """Discover, split and preprocess (cached) the data set."""
    dataset = discover(data, int(settings["seed"]), float(settings["val_fraction"]))
    prep = Preprocessing.from_settings(settings)
    cache = _cache_dir(settings)
    train = _prepared(dataset.train, prep, cache, "training", data)
    val = _prepared(dataset.val, prep, cache, "validation", data)
    dataset.problems = train.problems + val.problems
    log.info("CT data %s: %d train / %d val volumes (%s), %d preprocessed now, %d from the cache %s; "
             "%d left out", data, len(train.cases), len(val.cases), " vs ".join(dataset.classes),
             train.computed + val.computed, len(train.cases) + len(val.cases) - train.computed - val.computed,
             cache, len(dataset.problems))
    return dataset, train, val


def make_training(settings: dict[str, Any], data: Path, run_dir: Path
                  ) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    dataset, train, val = prepare_data(settings, Path(data))
    prep = Preprocessing.from_settings(settings)
    train_set, val_set = _volume_set(train, prep), _volume_set(val, prep)
    info = {
        "classes": list(dataset.classes),
        "class_folders": list(dataset.class_folders),
        "preprocessing": prep.as_dict(),
        "counts": {"train": len(train.cases), "val": len(val.cases)},
        "problems": dataset.problems[:50],
    }
    module = CTClassifierModule(settings, info, run_dir, val.cases, val_set)
    return module, CTDataModule(train_set, val_set, settings)
