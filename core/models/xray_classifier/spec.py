"""X-ray pneumonia classifier (SPEC 5B): settings, presets and data-set rule. Imports no torch."""

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

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
CAM_METHODS = ("cam", "gradcam", "gradcam++")

DEFAULTS: dict[str, Any] = family_defaults(
    {
        "backbone": "resnet152",
        "image_size": 224,
        "freeze_backbone": True,
        "pretrained": True,
        "weights_path": "",
        "max_epochs": 10,
        "batch_size": 32,
        "lr": 1e-3,
        "lr_step": 4,
        "lr_gamma": 0.1,
        "rotate_deg": 20.0,
        "hflip": True,
        "eval_crop_fraction": 0.875,
        "val_fraction": 0.15,
        "positive_class": "",
        "cam_method": "cam",
        "precise_bn": False,
        "save_top_k": 1,
        "early_stop_patience": 0,
    }
)


def _class_folders(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def is_dataset(folder: Path, names: set) -> bool:
    """A folder with `train/` (and `val/` or `test/`) holding at least two class folders."""
    if "train" not in names or not ({"val", "test"} & set(names)):
        return False
    return len(_class_folders(Path(folder) / "train")) >= 2


SPEC = register(
    ModelSpec(
        name="xray_classifier",
        task="image_classification",
        title="X-ray classifier (chest X-ray -> NORMAL / PNEUMONIA, with CAM)",
        description=(
            "ResNet-152 transfer learning (frozen backbone, head Linear(2048, 2) + log-softmax, NLL, "
            "Adam on the head, StepLR) on class folders train/ val/ test/; the heatmap shows where the "
            "model looked: CAM (layer4 weighted by the head's row of the predicted class), Grad-CAM or "
            "Grad-CAM++."
        ),
        defaults=DEFAULTS,
        make_training=LazyRef("core.models.xray_classifier.train:make_training"),
        make_predictor=LazyRef("core.models.xray_classifier.predict:make_predictor"),
        outputs=("label", "probabilities", "heatmap"),
        review="image_classes",
        modalities=("CR", "DX", "OT"),
        dataset_rule=is_dataset,
        dataset_hint="a folder with train/ (and val/, test/) each holding one folder per class "
        "(NORMAL/, PNEUMONIA/) of PNG, JPEG or DICOM images; no val/: a seeded split of train/",
        demo_data=LazyRef("core.models.xray_classifier.synthetic:write_demo"),
        demo_folder="xray",
        monitor="val_acc",
        monitor_mode="max",
        presets={
            # Learns the demo X-rays on a 2-core CPU in a few minutes: from scratch, so nothing frozen.
            QUICK_PRESET: {
                "backbone": "resnet18",
                "image_size": 128,
                "freeze_backbone": False,
                "pretrained": False,
                "batch_size": 16,
                "max_epochs": 8,
                "lr": 1e-3,
                "lr_step": 6,
                "eval_crop_fraction": 1.0,
                "precise_bn": True,
                "num_workers": 0,
            },
        },
        choices={
            **COMMON_CHOICES,
            "backbone": ("resnet152", "resnet50", "resnet18"),
            "cam_method": CAM_METHODS,
        },
        help={
            **COMMON_HELP,
            "backbone": "torchvision ResNet: resnet152 (reference, head 2048 -> 2), resnet50, resnet18 "
            "(fast, head 512 -> 2)",
            "image_size": "network input size in pixels (square)",
            "freeze_backbone": "train the head only (transfer learning); false trains every layer",
            "pretrained": "start from ImageNet weights when a local copy exists (never downloads)",
            "weights_path": "local ImageNet weights file; empty = look in the torchvision cache",
            "lr": "Adam learning rate (on the trainable parameters)",
            "lr_step": "StepLR step size (epochs)",
            "lr_gamma": "StepLR factor",
            "rotate_deg": "training augmentation: random rotation within +/- this angle",
            "hflip": "training augmentation: random horizontal flip",
            "eval_crop_fraction": "evaluation: resize to image_size / fraction, then center crop image_size "
            "(0.875 = 256 -> 224 as the reference; 1.0 = resize only)",
            "val_fraction": "share of each class of train/ held out for validation when there is no val/",
            "positive_class": "the class sensitivity and ROC count as positive (empty: PNEUMONIA, "
            "else the last class)",
            "cam_method": "heatmap of predictions: cam (SPEC 5B), gradcam or gradcam++ (monai.visualize)",
            "precise_bn": "before each validation, recompute batch-norm statistics over the training images "
            "(helps a network trained from scratch on little data; unused with a frozen backbone)",
            "save_top_k": "keep the best k checkpoints by validation accuracy (plus last.ckpt)",
            "early_stop_patience": "stop after this many epochs without better validation accuracy (0 = off)",
        },
    )
)
