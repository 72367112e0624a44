"""X-ray classifier training (SPEC 5B): LightningModule, data module, and the test-split evaluation.

NLL on log-softmax outputs, Adam on the trainable parameters (the head when the backbone is
frozen), StepLR; loss, accuracy, sensitivity, specificity and ROC AUC per epoch for train and
validation. After fit the best checkpoint's weights are evaluated on test/ (validation when there
is no test/) and written to `<run>/evaluation.json` (core.runs.evaluation reads it).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from core.atomic import atomic_write_json
from core.errors import TrainingDataError
from core.models.xray_classifier import metrics as M
from core.models.xray_classifier.data import (
    ClassFolders,
    XrayDataset,
    decode_split,
    eval_tensor,
    positive_index,
    resolve_class_folders,
    train_tensor,
)
from core.models.xray_classifier.net import build_model, load_imagenet_weights, model_args, to_network

log = logging.getLogger("slicewise.train")
EVALUATION_FILE = "evaluation.json"


class XrayModule(pl.LightningModule):
    def __init__(self, settings: dict[str, Any], classes: list[str], positive: int) -> None:
        super().__init__()
        self.settings = dict(settings)
        self.classes = list(classes)
        self.positive = int(positive)
        self.model_args = model_args(settings, len(classes))
        self.model = build_model(**self.model_args)
        if settings.get("pretrained", True):
            self.notices = [load_imagenet_weights(self.model, str(settings.get("weights_path", "")))]
        else:
            self.notices = ["pretrained=false: training from scratch"]
            log.info("pretrained=false: training %s from scratch", self.model_args["backbone"])
        self.frozen = bool(settings.get("freeze_backbone", True))
        if self.frozen:
            for p in self.model.backbone_parameters():
                p.requires_grad_(False)
            if "from scratch" in self.notices[0]:
                log.warning(
                    "freeze_backbone=true without ImageNet weights: only the head learns on top of "
                    "random features; set freeze_backbone=false (the quick preset does)"
                )
        self._seen: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
            "train": [],
            "val": [],
        }

    def train(self, mode: bool = True):
        """A frozen backbone keeps its batch-norm statistics (eval mode) while the head trains."""
        super().train(mode)
        if mode and getattr(self, "frozen", False):
            self.model.net.apply(
                lambda m: m.eval() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) else None
            )
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logp = self.model(x)
        loss = torch.nn.functional.nll_loss(logp.float(), y)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self._seen[stage].append((logp.detach().float().exp().cpu(), y.detach().cpu()))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def _epoch_metrics(self, stage: str) -> None:
        seen = self._seen[stage]
        if not seen:
            return
        probs = torch.cat([p for p, _ in seen]).numpy()
        true = torch.cat([y for _, y in seen]).numpy()
        seen.clear()
        values = M.summary(true, probs, self.positive)
        names = {"accuracy": "acc", "sensitivity": "sensitivity", "specificity": "specificity", "auc": "auc"}
        for key, value in values.items():
            self.log(f"{stage}_{names[key]}", float(value), sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self._epoch_metrics("train")

    def on_validation_epoch_start(self) -> None:
        if (
            self.settings.get("precise_bn", False)
            and not self.frozen
            and not self.trainer.sanity_checking
            and self.trainer.datamodule is not None
        ):
            images = self.trainer.datamodule.bn_images()
            precise_batchnorm(self.model, images, int(self.settings["batch_size"]), self.device)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._epoch_metrics("val")
        else:
            self._seen["val"].clear()

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=float(self.settings["lr"]))
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer,
            step_size=max(1, int(self.settings["lr_step"])),
            gamma=float(self.settings.get("lr_gamma", 0.1)),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def describe(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "positive_class": self.classes[self.positive],
            "preprocess": {
                "image_size": int(self.settings["image_size"]),
                "eval_crop_fraction": float(self.settings.get("eval_crop_fraction", 0.875)),
                "grey": "percentile 0.5-99.5 -> [0, 1]",
                "normalise": "imagenet",
            },
            "cam_method": str(self.settings.get("cam_method", "cam")),
            "notices": list(self.notices),
        }

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        datamodule = self.trainer.datamodule
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        model = copy.deepcopy(self.model).cpu()
        if best and Path(best).is_file():
            raw = torch.load(best, map_location="cpu", weights_only=True)
            model.load_state_dict({k[6:]: v for k, v in raw["state_dict"].items() if k.startswith("model.")})
        run_dir = Path(self.trainer.default_root_dir)
        evaluation = evaluate(model, datamodule, self.classes, self.positive, best or "")
        atomic_write_json(run_dir / EVALUATION_FILE, evaluation)
        s = evaluation["summary"]
        log.info(
            "test (%s, %d images): accuracy %.3f, AUC %.3f, sensitivity %.3f, specificity %.3f -> %s",
            evaluation["split"],
            s["images"],
            s["accuracy"],
            s["auc"],
            s["sensitivity"],
            s["specificity"],
            run_dir / EVALUATION_FILE,
        )


@torch.no_grad()
def precise_batchnorm(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device) -> None:
    """Batch-norm running statistics recomputed over `images` (uint8 (n, S, S)) with the current weights.

    A network trained from scratch on a few hundred images changes faster than the running averages
    follow (momentum 0.1 over a handful of steps per epoch): validation in eval mode then sees stale
    statistics and predicts one class. One forward pass over the training images (no augmentation)
    with cumulative averages fixes that, at about a third of an epoch's cost (Wu & Johnson, 2021).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(images) == 0:
        return
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for start in range(0, len(images), max(1, batch_size)):
        model(to_network(images[start : start + batch_size].float().to(device) / 255.0))
    for m, (momentum, training) in zip(norms, saved, strict=True):
        m.momentum = momentum
        m.train(training)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, datamodule: XrayDataModule, classes: list[str], positive: int, checkpoint: str
) -> dict[str, Any]:
    """The evaluation.json payload for the best weights on the test split (validation without test/)."""
    images, labels, paths, split = datamodule.evaluation_set()
    model.eval()
    probs = []
    for start in range(0, len(labels), 32):
        x = to_network(images[start : start + 32].float() / 255.0)
        probs.append(model(x).float().exp())
    probs_np = torch.cat(probs).numpy() if probs else np.zeros((0, len(classes)))
    true = np.asarray(labels, int)
    pred = probs_np.argmax(axis=1) if len(true) else np.zeros(0, int)
    summary = M.summary(true, probs_np, positive)
    fpr, tpr, thr = M.roc_curve(probs_np[:, positive] if len(true) else np.zeros(0), true == positive)
    root = datamodule.folders.root
    cases = []
    for i, path in enumerate(paths):
        case = {
            "path": str(path.resolve()),
            "file": _relative(path, root),
            "true": classes[true[i]],
            "predicted": classes[pred[i]],
            "probability": round(float(probs_np[i, pred[i]]), 6),
            "correct": bool(true[i] == pred[i]),
        }
        case.update({f"p_{c}": round(float(probs_np[i, k]), 6) for k, c in enumerate(classes)})
        cases.append(case)
    clean = lambda v: None if not np.isfinite(v) else round(float(v), 6)  # noqa: E731
    return {
        "split": split,
        "checkpoint": checkpoint,
        "positive_class": classes[positive],
        "confusion_matrix": {
            "classes": list(classes),
            "matrix": M.confusion_matrix(true, pred, len(classes)).tolist(),
        },
        "roc": {
            "fpr": [round(float(v), 6) for v in fpr],
            "tpr": [round(float(v), 6) for v in tpr],
            "thresholds": [clean(v) for v in thr],
            "auc": clean(summary["auc"]),
        },
        "summary": {
            **{k: clean(v) for k, v in summary.items()},
            "images": len(true),
            "skipped": len(datamodule.skipped),
        },
        "cases": cases,
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


class XrayDataModule(pl.LightningDataModule):
    def __init__(self, folders: ClassFolders, settings: dict[str, Any]) -> None:
        super().__init__()
        self.folders, self.settings = folders, settings
        self.size = int(settings["image_size"])
        self.crop_fraction = float(settings.get("eval_crop_fraction", 0.875))
        self.skipped: list[str] = []
        self._decoded: dict[str, tuple] = {}
        self._loaders: dict[str, DataLoader] = {}
        self._loaders_for: object = None

    def _decode(self, name: str) -> tuple:
        if name not in self._decoded:
            split = getattr(self.folders, name)
            make = train_tensor(self.size) if name == "train" else eval_tensor(self.size, self.crop_fraction)
            images, labels, paths, skipped = decode_split(
                split, make, max(1, int(self.settings["num_workers"]))
            )
            for message in skipped:
                log.warning("skipped unreadable image: %s", message)
            self.skipped += skipped
            if name != "test":
                for c, cls in enumerate(self.folders.classes):
                    if c not in labels:
                        where = (
                            self.folders.root
                            / ("train" if name == "train" or self.folders.val_from_train else name)
                            / cls
                        )
                        raise TrainingDataError(f"{where}: no readable {name} images of class {cls!r}")
            self._decoded[name] = (images, labels, paths)
        return self._decoded[name]

    def setup(self, stage: str) -> None:
        """Decode the images once, in the main process, before any loader worker forks."""
        train, val = self._decode("train"), self._decode("val")
        counts = lambda labels: ", ".join(  # noqa: E731
            f"{c} {labels.count(i)}" for i, c in enumerate(self.folders.classes)
        )
        log.info(
            "X-ray data %s: train %d (%s), val %d (%s), test %d; %d unreadable skipped",
            self.folders.root,
            len(train[1]),
            counts(train[1]),
            len(val[1]),
            counts(val[1]),
            len(self.folders.test),
            len(self.skipped),
        )

    def bn_images(self, limit: int = 512) -> torch.Tensor:
        """Up to `limit` training images (evenly spaced) for precise batch-norm statistics."""
        images = self._decode("train")[0]
        step = max(1, len(images) // limit)
        return images[::step][:limit]

    def evaluation_set(self) -> tuple[torch.Tensor, list[int], list[Path], str]:
        name = "test" if len(self.folders.test) else "val"
        images, labels, paths = self._decode(name)
        return images, labels, paths, name

    def _loader_kwargs(self) -> dict[str, Any]:
        workers = int(self.settings["num_workers"])
        return {
            "batch_size": int(self.settings["batch_size"]),
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _cached(self, name: str, build) -> DataLoader:
        if self._loaders_for is not self.trainer:
            self._loaders, self._loaders_for = {}, self.trainer
        if name not in self._loaders:
            self._loaders[name] = build()
        return self._loaders[name]

    def train_dataloader(self) -> DataLoader:
        def build() -> DataLoader:
            images, labels, _ = self._decode("train")
            data = XrayDataset(images, labels, True, self.settings)
            gen = torch.Generator().manual_seed(int(self.settings["seed"]))
            return DataLoader(
                data,
                shuffle=True,
                generator=gen,
                drop_last=len(data) > int(self.settings["batch_size"]),
                **self._loader_kwargs(),
            )

        return self._cached("train", build)

    def val_dataloader(self) -> DataLoader:
        def build() -> DataLoader:
            images, labels, _ = self._decode("val")
            return DataLoader(
                XrayDataset(images, labels, False, self.settings), shuffle=False, **self._loader_kwargs()
            )

        return self._cached("val", build)


def make_training(settings: dict[str, Any], data: Path, run_dir: Path) -> tuple[XrayModule, XrayDataModule]:
    folders = resolve_class_folders(
        Path(data), float(settings.get("val_fraction", 0.15)), int(settings["seed"])
    )
    positive = positive_index(folders.classes, str(settings.get("positive_class", "")))
    log.info(
        "X-ray classes %s (positive: %s); %d train, %d val%s, %d test images listed",
        folders.classes,
        folders.classes[positive],
        len(folders.train),
        len(folders.val),
        " (split from train/)" if folders.val_from_train else "",
        len(folders.test),
    )
    return XrayModule(settings, folders.classes, positive), XrayDataModule(folders, settings)
