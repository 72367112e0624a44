"""Lung localizer training pieces: LightningModule and LightningDataModule (SPEC 5A)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from core.models.lung_localizer.data import (
    Augmentation,
    EpochShuffleSampler,
    LungBoxDataset,
    PreparedLungData,
    cache_fits,
    read_prepared,
    resolve_lung_data,
)
from core.models.lung_localizer.net import (
    build_model,
    init_head_bias,
    load_imagenet_weights,
    model_args,
    regressors,
)

log = logging.getLogger("slicewise.train")

IOU_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def box_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of two (n, 4) XYXY box sets (0 where boxes do not overlap)."""
    x0 = torch.maximum(pred[:, 0], target[:, 0])
    y0 = torch.maximum(pred[:, 1], target[:, 1])
    x1 = torch.minimum(pred[:, 2], target[:, 2])
    y1 = torch.minimum(pred[:, 3], target[:, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area = lambda b: (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # noqa: E731
    union = area(pred) + area(target) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-9), torch.zeros_like(union))


def iou_summary(ious: np.ndarray, prefix: str = "val_iou") -> dict[str, float]:
    """Mean, min and quantiles of the IoU distribution."""
    out = {prefix: float(ious.mean()), f"{prefix}_min": float(ious.min())}
    for q in IOU_QUANTILES:
        out[f"{prefix}_p{int(q * 100):02d}"] = float(np.quantile(ious, q))
    return out


class LungLocalizerModule(pl.LightningModule):
    """Smooth-L1 on pixel boxes, Adam, ReduceLROnPlateau on validation loss; IoU as the metric."""

    def __init__(
        self, settings: dict[str, Any], stats: dict[str, Any], mean_box_px: list[float] | None = None
    ):
        super().__init__()
        self.settings = dict(settings)
        self.model_args = model_args(settings)
        self.stats = dict(stats)
        self.model = build_model(**self.model_args)
        self.notices: list[str] = []
        if settings.get("pretrained", True):
            self.notices = [
                load_imagenet_weights(r, str(settings.get("weights_path", "")))
                for r in regressors(self.model)
            ]
        else:
            self.notices = ["pretrained=false: training from scratch"]
        if settings.get("init_head_to_mean_box", True) and mean_box_px is not None:
            init_head_bias(self.model, mean_box_px)
        self._val_pred: list[torch.Tensor] = []
        self._val_true: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(
        self, x: torch.Tensor, boxes: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self.model, "profile_loss"):
            return self.model.profile_loss(x, boxes, weights)
        members = self.model.member_boxes(x)  # (m, batch, 4): each member learns the box
        if weights is None:
            loss = torch.nn.functional.smooth_l1_loss(members.float(), boxes.expand_as(members).float())
        else:  # pseudo-labelled slices weigh less (mean over all terms, as without weights)
            terms = torch.nn.functional.smooth_l1_loss(
                members.float(), boxes.expand_as(members).float(), reduction="none"
            )
            loss = (terms * weights.float().view(1, -1, 1)).mean()
        return loss, members.mean(dim=0)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, boxes = batch[0], batch[1]
        loss, _ = self._loss(x, boxes, batch[2] if len(batch) > 2 else None)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, boxes = batch
        loss, pred = self._loss(x, boxes)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self._val_pred.append(pred.detach().float().cpu())
        self._val_true.append(boxes.detach().float().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_pred:
            return
        ious = box_iou(torch.cat(self._val_pred), torch.cat(self._val_true)).numpy()
        self._val_pred.clear()
        self._val_true.clear()
        for key, value in iou_summary(ious).items():
            self.log(key, value, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=float(self.settings["lr"]))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=float(self.settings["lr_factor"]),
            patience=int(self.settings["lr_patience"]),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
        }

    def describe(self) -> dict[str, Any]:
        """What prediction needs besides the weights (the engine stores it in every checkpoint)."""
        return {"stats": {"mean": float(self.stats["mean"]), "std": float(self.stats["std"]),
                          "size": int(self.stats.get("size", 0))}}


class LungDataModule(pl.LightningDataModule):
    def __init__(self, data: PreparedLungData, settings: dict[str, Any]) -> None:
        super().__init__()
        self.data, self.settings = data, settings
        size, seed = int(settings["image_size"]), int(settings["seed"])
        aug = Augmentation.from_settings(settings)
        cache = cache_fits(data.train + data.val, size)
        self.train_set = LungBoxDataset(
            data.train, size, data.mean, data.std, aug if settings["augment"] else None, seed, cache
        )
        self.val_set = LungBoxDataset(data.val, size, data.mean, data.std, None, seed, cache)
        self._loaders: dict[str, DataLoader] = {}
        self._loaders_for: object = None

    def setup(self, stage: str) -> None:
        """Decode the slices once, in the main process, before any loader worker forks."""
        self.train_set.preload()
        self.val_set.preload()

    def _loader_kwargs(self) -> dict[str, Any]:
        workers = int(self.settings["num_workers"])
        return {
            "batch_size": int(self.settings["batch_size"]),
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _cached(self, name: str, build: Any) -> DataLoader:
        """One loader per fit: Lightning re-requests it every epoch (see core.train.loop.fit), and a
        new DataLoader would start new worker processes each time."""
        if self._loaders_for is not self.trainer:
            self._loaders, self._loaders_for = {}, self.trainer
        if name not in self._loaders:
            self._loaders[name] = build()
        return self._loaders[name]

    def train_dataloader(self) -> DataLoader:
        return self._cached("train", self._train_loader)

    def val_dataloader(self) -> DataLoader:
        return self._cached("val", lambda: DataLoader(self.val_set, shuffle=False, **self._loader_kwargs()))

    def _train_loader(self) -> DataLoader:
        trainer = self.trainer
        sampler = EpochShuffleSampler(
            len(self.train_set),
            int(self.settings["seed"]),
            lambda: trainer.current_epoch if trainer is not None else 0,
        )
        drop_last = len(self.train_set) > int(self.settings["batch_size"])
        return DataLoader(self.train_set, sampler=sampler, drop_last=drop_last, **self._loader_kwargs())


def mean_box_px(data: PreparedLungData, size: int) -> list[float]:
    boxes = [item.box for item in data.train if item.weight == 1.0] or [item.box for item in data.train]
    return (np.mean(boxes, axis=0) * size).tolist()


def make_training(
    settings: dict[str, Any], data: Path, run_dir: Path
) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """(module, datamodule) for `--data` (prepared folder, data root or annotation CSV)."""
    prepared = read_prepared(
        resolve_lung_data(data, run_dir, settings, progress=log.info),
        pseudo_weight=float(settings.get("pseudo_label_weight", 0.3)),
    )
    n_pseudo = sum(1 for item in prepared.train if item.weight != 1.0)
    log.info(
        "lung data %s: %d train (%d of them HU-rule pseudo-labels) / %d val slices, stats mean %.4f std %.4f",
        prepared.root,
        len(prepared.train),
        n_pseudo,
        len(prepared.val),
        prepared.mean,
        prepared.std,
    )
    log.info("augmentation: %s", Augmentation.from_settings(settings) if settings["augment"] else "off")
    stats = {"mean": prepared.mean, "std": prepared.std, "size": prepared.size}
    module = LungLocalizerModule(settings, stats, mean_box_px(prepared, int(settings["image_size"])))
    return module, LungDataModule(prepared, settings)
