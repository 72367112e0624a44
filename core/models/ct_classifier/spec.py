"""3D CT classifier (SPEC 5C): the family's settings, presets and data-set rule. Imports no torch."""

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
        "depth": 64,
        "size": 128,
        "hu_min": -1000.0,
        "hu_max": 400.0,
        "rotate90": True,
        "batch_size": 2,
        "max_epochs": 100,
        "lr": 1e-4,
        "lr_decay_rate": 0.96,
        "lr_decay_steps": 100000,
        "early_stop_patience": 15,
        "augment": True,
        "width": 1.0,
        "dense": 512,
        "dropout": 0.3,
        "padding": "valid",
        "val_fraction": 0.3,
        "cache_dir": "",
        "save_top_k": 1,
        "precise_bn": True,
    }
)


def is_dataset(folder: Path, names: set) -> bool:
    from core.models.ct_classifier.data import looks_like_dataset

    return looks_like_dataset(folder, names)


SPEC = register(
    ModelSpec(
        name="ct_classifier",
        task="volume_classification",
        title="3D CT classifier (normal vs abnormal volume)",
        description=(
            "A 3D CNN (four Conv3d blocks of 64, 64, 128, 256 filters with max-pooling and batch norm, "
            "global average pooling, Dense 512, dropout 0.3, one sigmoid output) classifying a whole CT "
            "volume as normal or abnormal (e.g. MosMed CT-0 vs CT-23), with a 3D Grad-CAM of its last "
            "conv block."
        ),
        defaults=DEFAULTS,
        make_training=LazyRef("core.models.ct_classifier.train:make_training"),
        make_predictor=LazyRef("core.models.ct_classifier.predict:make_predictor"),
        outputs=("label", "probabilities", "heatmap"),
        review="volume_classes",
        modalities=("CT",),
        dataset_rule=is_dataset,
        dataset_hint="a folder with two class folders of CT volumes (CT-0 / CT-23 or normal / abnormal; "
        "NIfTI, NRRD or DICOM series), or train/ and val/ folders holding them",
        demo_data=LazyRef("core.models.ct_classifier.demo:write_demo"),
        demo_folder="ct_nifti",
        monitor="val_acc",
        monitor_mode="max",
        presets={
            # Learns the demo set on a 2-core CPU in a few minutes: small volumes, a quarter of the
            # filters, 'same' padding so the small volume survives four poolings.
            QUICK_PRESET: {"depth": 16, "size": 64, "width": 0.25, "dense": 64, "padding": "same",
                           "batch_size": 4, "max_epochs": 30, "lr": 1e-3, "num_workers": 0,
                           "early_stop_patience": 10},
        },
        choices={**COMMON_CHOICES, "padding": ("valid", "same")},
        help={
            **COMMON_HELP,
            "depth": "slices after resizing (the network input's depth)",
            "size": "in-plane size after resizing (square)",
            "hu_min": "lower Hounsfield clip (maps to 0)",
            "hu_max": "upper Hounsfield clip (maps to 1)",
            "rotate90": "turn each slice a quarter turn in plane before resizing (the reference's layout)",
            "batch_size": "volumes per training step",
            "lr": "Adam learning rate (initial)",
            "lr_decay_rate": "exponential decay factor of the learning rate ...",
            "lr_decay_steps": "... applied every this many steps (staircase)",
            "early_stop_patience": "stop after this many epochs without a better validation accuracy "
            "(0 = off)",
            "augment": "rotate each training volume in plane by one of ±5, ±10, ±20 degrees",
            "width": "filter multiplier of the four conv blocks (1 = 64, 64, 128, 256)",
            "dense": "units of the dense layer",
            "padding": "valid (the reference) or same (keeps small volumes alive through the poolings)",
            "val_fraction": "validation share per class when the data has no val/ folder",
            "cache_dir": "where preprocessed volumes are cached (empty = <runs root>/.cache/ct_classifier)",
            "precise_bn": "before each validation, recompute the batch-norm statistics over the training "
            "volumes (small batches leave the moving averages far behind the weights)",
            "save_top_k": "keep the best k checkpoints by validation accuracy (plus last.ckpt)",
        },
    )
)
