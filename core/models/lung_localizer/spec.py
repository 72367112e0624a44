"""Lung localizer (SPEC 5A): the family's settings, presets and data-set rule. Imports no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.models import (
    COMMON_CHOICES,
    COMMON_HELP,
    QUICK_PRESET,
    LazyRef,
    ModelSpec,
    family_defaults,
    register,
)

DEFAULTS: dict[str, Any] = family_defaults(
    {
        "backbone": "resnet50",
        "image_size": 512,
        "batch_size": 8,
        "max_epochs": 100,
        "lr": 1e-4,
        "lr_factor": 0.1,
        "lr_patience": 10,
        "save_top_k": 5,
        "early_stop_patience": 0,
        "dropout": 0.2,
        "augment": True,
        "aug_gamma": 0.3,
        "aug_rotate_deg": 10.0,
        "aug_scale": 0.1,
        "aug_translate": 0.08,
        "pretrained": True,
        "weights_path": "",
        "init_head_to_mean_box": True,
        "annotations_csv": "",
        "prepare_size": 512,
        "val_fraction": 0.2,
    }
)


def is_dataset(folder: Path, names: set) -> bool:
    """A prepared folder (`python -m core prepare`), or the demo folder (phantom truth boxes)."""
    return ("stats.json" in names and "boxes.csv" in names) or (
        "manifest.json" in names and "truth" in names)


def dataset_problem(folder: Path) -> str:
    """Why training on `folder` cannot work, or "": cheap checks of what the trainer would read (no
    pixels): a prepared folder needs train and validation slices; the data root needs annotated
    slices from at least two series (the split holds whole patients out for validation)."""
    import csv

    folder = Path(folder)
    if (folder / "stats.json").is_file() and (folder / "boxes.csv").is_file():
        splits = {row.get("split") for row in csv.DictReader((folder / "boxes.csv").open(newline=""))}
        missing = [name for name in ("train", "val") if name not in splits]
        return f"{folder / 'boxes.csv'}: no {' or '.join(missing)} slices; prepare it again from annotated " \
            "slices of at least two patients" if missing else ""
    if (folder / "manifest.json").is_file() and (folder / "truth").is_dir():
        return ""  # the demo data set trains on its ground-truth boxes
    from core.settings import annotations_path

    csv_path = annotations_path()
    if not csv_path.is_file():
        return f"No lung boxes annotated yet ({csv_path} does not exist): draw boxes on the Annotate page, " \
            "or pick a prepared folder or the demo data"
    series = {row.get("Volume") for row in csv.DictReader(csv_path.open(newline="")) if row.get("Volume")}
    if len(series) < 2:
        return f"{csv_path}: the annotated slices come from {len(series) or 'no'} series; training needs " \
            "at least two patients (one is held out for validation): annotate another patient's series"
    return ""


SPEC = register(
    ModelSpec(
        name="lung_localizer",
        task="box_regression",
        title="Lung localizer (CT slice -> lung box)",
        description=(
            "ResNet-50 (or EfficientNet-B0, or both as an ensemble) with a 1-channel stem regressing "
            "one box (Xmin, Ymin, Xmax, Ymax) covering both lungs on an axial CT slice."
        ),
        defaults=DEFAULTS,
        make_training=LazyRef("core.models.lung_localizer.train:make_training"),
        make_predictor=LazyRef("core.models.lung_localizer.predict:make_predictor"),
        outputs=("boxes",),
        review="boxes",
        modalities=("CT",),
        dataset_rule=is_dataset,
        dataset_check=dataset_problem,
        dataset_hint="a prepared folder (python -m core prepare), the demo folder, or the data root "
        "(its annotated slices are prepared first)",
        monitor="val_loss",
        monitor_mode="min",
        presets={
            # What learns within about a minute on a 2-core CPU (README example).
            QUICK_PRESET: {"backbone": "resnet18", "image_size": 128, "prepare_size": 128,
                           "batch_size": 16, "max_epochs": 5, "lr": 1e-3, "num_workers": 0},
        },
        choices={
            **COMMON_CHOICES,
            "backbone": ("resnet50", "efficientnet_b0", "ensemble", "resnet18"),
        },
        help={
            **COMMON_HELP,
            "backbone": "resnet50 (reference), efficientnet_b0, ensemble (both, boxes averaged), "
            "resnet18 (fast, for tests)",
            "image_size": "network input size in pixels (square); boxes are clamped to [0, image_size]",
            "lr": "Adam learning rate",
            "lr_factor": "ReduceLROnPlateau factor on validation loss",
            "lr_patience": "ReduceLROnPlateau patience (epochs)",
            "save_top_k": "keep the best k checkpoints by validation loss (plus last.ckpt)",
            "early_stop_patience": "stop after this many epochs without a better validation loss (0 = off)",
            "augment": "gamma contrast and affine (scale, rotate, translate) moving image and box together",
            "pretrained": "start from ImageNet weights when a local copy exists (never downloads)",
            "weights_path": "local ImageNet weights file; empty = look in the torchvision cache",
            "init_head_to_mean_box": "start the last layer's bias at the mean training box",
            "annotations_csv": "when --data is a data root: the lung_bbox.csv to prepare from "
            "(empty = the configured annotation file)",
            "prepare_size": "slice size the prepare step writes (when --data is not prepared yet)",
            "val_fraction": "validation share of series (when --data is not prepared yet)",
        },
    )
)
