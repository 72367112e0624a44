"""Two-stage VNet training in one job (SPEC 5D).

`make_training` loads the cases, pads them to one size, trains the locator on downscaled volumes (a
plain seeded loop, before the engine's Lightning fit starts), derives the crops (one size for all) and
returns the segmenter's LightningModule. Its `.model` holds both networks (`.locator`, `.segmenter`),
so every checkpoint carries both; `describe()` carries the pad size, crop size, locator scale and buffer.
After the fit, the best checkpoint's weights run the whole pipeline on the held-out cases and
`<run>/evaluation.json` gets per-case Dice, IoU, precision, recall, Hausdorff and HD95 (mm) and the
locator's crop recall.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from core.models.vnet.data import Case, load_cases, split_cases
from core.models.vnet.datasets import CropDataModule, TrainCrop, ValCrop
from core.models.vnet.losses import HybridSchedule, SegmentationLoss
from core.models.vnet.metrics import (
    DISTANCES,
    OVERLAP,
    case_metrics,
    overlap_from_counts,
    summarise,
    worst_slice,
)
from core.models.vnet.net import build_model, model_args
from core.models.vnet.stages import (
    LocatorData,
    bounding_box,
    crop_size_for,
    downscale,
    inside_share,
    locate,
    pad_to,
    parse_scale,
    segment_volume,
    train_locator,
    widen,
    window,
)

log = logging.getLogger("slicewise.train")
LOCATOR_CACHE = "locator_stage.weights"  # not .pt: the Predict page lists .pt files as checkpoints


class VNetModule(pl.LightningModule):
    """The segmenter's training; the locator rides along (frozen) inside `.model`."""

    def __init__(
        self,
        settings: dict[str, Any],
        description: dict[str, Any],
        cases: dict[str, Case],
        run_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.model_args = model_args(settings)
        self.model = build_model(**self.model_args)
        self.description = description
        self.cases = cases  # held-out cases, for the evaluation after the fit
        self.run_dir = run_dir
        self.schedule = HybridSchedule(
            start_epoch=int(settings["boundary_start_epoch"]),
            dice_threshold=float(settings["boundary_dice_threshold"]),
            step=float(settings["boundary_step"]),
            max_weight=float(settings["boundary_max_weight"]),
        )
        self.loss_fn = SegmentationLoss(
            str(settings["loss"]),
            float(settings["focal_alpha"]),
            float(settings["focal_gamma"]),
            self.schedule,
        )
        self._val: dict[str, list[int]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.segmenter(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model.segmenter(batch["image"])
        distance = batch["distance"] if self.loss_fn.needs_distance else None
        loss = self.loss_fn(logits, batch["label"], distance, self.current_epoch)
        n = batch["image"].shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        if self.settings["loss"] == "hybrid":
            self.log(
                "boundary_weight",
                self.schedule.weight(self.current_epoch),
                on_step=False,
                on_epoch=True,
                batch_size=n,
            )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.model.segmenter(batch["image"])
        distance = batch["distance"] if self.loss_fn.needs_distance else None
        loss = self.loss_fn(logits, batch["label"], distance, self.current_epoch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=batch["image"].shape[0],
                 sync_dist=True)
        pred, truth = logits > 0, batch["label"] > 0.5
        for i, case_id in enumerate(batch["case_id"]):
            tp = int((pred[i] & truth[i]).sum())
            fp = int(pred[i].sum()) - tp
            fn = int(truth[i].sum()) - tp + int(batch["outside"][i])  # truth the crop missed counts too
            self._val[case_id] = [tp, fp, fn]

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        rows = [overlap_from_counts(*counts) for counts in self._val.values()]
        self._val.clear()
        for key in ("dice", "iou", "precision", "recall"):
            self.log(f"val_{key}", float(np.mean([r[key] for r in rows])))
        if not self.trainer.sanity_checking:
            self.schedule.observe(self.current_epoch, float(np.mean([r["dice"] for r in rows])))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.model.segmenter.parameters(), lr=float(self.settings["lr"]))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=float(self.settings["lr_factor"]),
            patience=int(self.settings["lr_patience"]),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_dice", "interval": "epoch"},
        }

    def on_train_epoch_start(self) -> None:
        self.model.locator.eval()  # frozen: its batch-norm statistics stay those of stage 1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vnet_schedule_started_at"] = self.schedule.started_at

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.schedule.started_at = checkpoint.get("vnet_schedule_started_at")

    def describe(self) -> dict[str, Any]:
        return dict(self.description)

    def on_fit_end(self) -> None:
        if self.run_dir is None or not self.cases or not self.trainer.is_global_zero:
            return
        self._load_best_weights()
        from core.atomic import atomic_write_json

        atomic_write_json(Path(self.run_dir) / "evaluation.json", self.evaluate())

    def _load_best_weights(self) -> None:
        callback = getattr(self.trainer, "checkpoint_callback", None)
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        if best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            self.model.load_state_dict(
                {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
            )

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """The whole pipeline on each held-out case: metrics at the case's own shape and spacing."""
        self.model.eval()
        device = str(self.device)
        rows = []
        for case_id, case in sorted(self.cases.items()):
            result = segment_volume(self.model, case.image, self.description, device)
            row: dict[str, Any] = {"case": case_id}
            row.update(case_metrics(result.mask, case.label, case.spacing))
            row["crop_recall"] = inside_share(case.label, result.window)
            row["located"] = result.located is not None
            row["voxels_true"] = int(case.label.sum())
            row["voxels_predicted"] = int(result.mask.sum())
            row["worst_slice"] = worst_slice(result.mask, case.label)
            rows.append(row)
        summary = summarise(rows, (*OVERLAP, *DISTANCES, "crop_recall"))
        summary["cases"] = len(rows)
        summary["crop_recall_min"] = float(min(r["crop_recall"] for r in rows))
        summary.update(
            {
                f"locator_{k}": v
                for k, v in self.description.get("locator", {}).items()
                if isinstance(v, int | float)
            }
        )
        return {
            "summary": summary,
            "cases": sorted(rows, key=lambda r: r["dice"]),
            "spacing_units": "mm",
            "split": "validation (held out)",
        }


# ---------------------------------------------------------------------------------------------
# make_training
# ---------------------------------------------------------------------------------------------


def _stage_key(settings: dict[str, Any], cases: list[Case], pad: list[int]) -> str:
    """What the locator's training depends on: its settings and the data (cached across a resume)."""
    keys = (
        "seed",
        "locator_width",
        "levels",
        "kernel_size",
        "network",
        "locator_epochs",
        "locator_scale",
        "locator_batch_size",
        "locator_lr",
        "locator_lr_factor",
        "locator_lr_patience",
        "augment",
        "noise_std",
    )
    digest = hashlib.sha256(json.dumps({k: settings.get(k) for k in keys}, sort_keys=True).encode())
    for case in cases:
        digest.update(case.case_id.encode())
        digest.update(np.ascontiguousarray(case.label).tobytes()[:1_000_000])
    digest.update(str(pad).encode())
    return digest.hexdigest()


def _locator_stage(
    model: torch.nn.Module,
    settings: dict[str, Any],
    train: list[Case],
    pad: list[int],
    run_dir: Path,
    key: str,
) -> list[float]:
    """Train the locator (or reuse the weights a first attempt of this run saved: a resume)."""
    from core.device import choose_device

    cache = Path(run_dir) / LOCATOR_CACHE
    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            model.locator.load_state_dict(saved["state_dict"])
            model.locator.eval()
            log.info("locator: reusing the weights trained earlier in this run (%s)", cache.name)
            return list(saved["history"])
    scale = parse_scale(settings["locator_scale"])
    data = LocatorData(
        np.stack([downscale(pad_to(c.image, pad), scale) for c in train]),
        np.stack([downscale(pad_to(c.label, pad), scale, label=True) for c in train]),
    )
    log.info("locator: %d volumes of %s (padded %s x %s)", len(train), data.images.shape[1:], pad, scale)
    device = choose_device(str(settings.get("device", "auto")))
    history = train_locator(model.locator, data, settings, device)
    model.locator.cpu()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "state_dict": model.locator.state_dict(), "history": history}, cache)
    return history


def _located_boxes(model: torch.nn.Module, cases: list[Case], pad: list[int], scale) -> dict[str, Any]:
    """The locator's box per case (full-resolution voxels, not widened); None where it found nothing."""
    return {c.case_id: locate(model.locator, pad_to(c.image, pad), scale, "cpu")[0] for c in cases}


def _locator_summary(cases: list[Case], windows: dict[str, Any]) -> dict[str, float]:
    """Share of true voxels inside each held-out case's crop window (the segmenter's input)."""
    recalls = [inside_share(c.label, windows[c.case_id]) for c in cases]
    return {
        "crop_recall_mean": float(np.mean(recalls)),
        "crop_recall_min": float(np.min(recalls)),
        "cases": len(recalls),
    }


def make_training(
    settings: dict[str, Any], data: Path, run_dir: Path
) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    # the frozen locator stays in eval mode inside the trained module, on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    cases, skipped = load_cases(Path(data))
    train_ids, val_ids = split_cases(
        [c.case_id for c in cases], float(settings["val_fraction"]), int(settings["seed"])
    )
    by_id = {c.case_id: c for c in cases}
    train, val = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    pad = [int(v) for v in np.max([c.image.shape for c in cases], axis=0)]
    scale, buffer = parse_scale(settings["locator_scale"]), int(settings["buffer"])
    module_settings = dict(settings)
    module = VNetModule(module_settings, {}, {c.case_id: c for c in val}, Path(run_dir))
    history = _locator_stage(
        module.model, settings, train, pad, Path(run_dir), _stage_key(settings, train, pad)
    )
    module.model.locator.requires_grad_(False)
    located = _located_boxes(module.model, val, pad, scale)
    sized = [bounding_box(c.label) for c in cases] + [b for b in located.values() if b is not None]
    crop = crop_size_for(sized, buffer, pad, 2 ** int(settings["levels"]))
    windows = {i: window(None if b is None else widen(b, buffer, pad), crop, pad) for i, b in located.items()}
    locator = {
        "final_loss": history[-1] if history else None,
        "found": sum(b is not None for b in located.values()),
        **_locator_summary(val, windows),
    }
    log.info(
        "pad %s, crop %s; locator on %d held-out cases: crop recall mean %.4f min %.4f, found %d",
        pad,
        crop,
        len(val),
        locator["crop_recall_mean"],
        locator["crop_recall_min"],
        locator["found"],
    )
    module.description = {
        "pad_size": pad,
        "crop_size": crop,
        "locator_scale": list(scale),
        "buffer": buffer,
        "normalise": {"kind": "percentile", "low": 0.5, "high": 99.5},
        "threshold": 0.5,
        "largest_component": bool(settings["largest_component"]),
        "split": {"train": train_ids, "val": val_ids},
        "skipped": skipped[:50],
        "locator": locator,
    }
    train_crops = [
        TrainCrop.around(c, bounding_box(c.label), crop, pad, int(settings["translate_vox"])) for c in train
    ]
    val_crops = [ValCrop.at(c, windows[c.case_id], pad) for c in val]
    return module, CropDataModule(train_crops, val_crops, settings, module.loss_fn.needs_distance)
