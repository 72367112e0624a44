"""Brain MRI grade classifier (SPEC 5E): settings, presets, data-set rule. Imports no torch."""

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
        "image_size": 240,
        "batch_size": 32,
        "max_epochs": 30,
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "val_fraction": 0.2,
        "min_tumour_pixels": 1,
        "augment": True,
        "early_stop_patience": 0,
        "save_top_k": 1,
        "cam_layer": "layer4",
        "weights_path": "",
    }
)


def is_dataset(folder: Path, names: set) -> bool:
    """A BraTS training folder: name_mapping.csv beside the patient folders, or HGG/ and LGG/ folders."""
    return "name_mapping.csv" in names or {"HGG", "LGG"} <= set(names)


SPEC = register(
    ModelSpec(
        name="brain_mri",
        task="volume_classification",
        title="Brain MRI tumour grade (FLAIR, T1, T1ce, T2 -> LGG / HGG)",
        description=(
            "ResNet-18 with a 4-channel stem (the four co-registered sequences as channels) and a 2-way "
            "head, trained on the axial slices that contain tumour; a patient's grade is the mean of its "
            "slice probabilities. Grad-CAM per slice shows where the model looked."
        ),
        defaults=DEFAULTS,
        make_training=LazyRef("core.models.brain_mri.train:make_training"),
        make_predictor=LazyRef("core.models.brain_mri.predict:make_predictor"),
        outputs=("label", "probabilities", "slice_probabilities", "heatmap"),
        review="volume_classes",
        input_kind="patient_folder",
        modalities=("MR",),
        dataset_rule=is_dataset,
        dataset_hint="a BraTS training folder: <id>/<id>_flair|_t1|_t1ce|_t2|_seg.nii(.gz) and "
        "name_mapping.csv with the grade (or HGG/ and LGG/ folders of patients)",
        demo_data=LazyRef("core.models.brain_mri.demo:write_demo"),
        demo_folder="brats",
        monitor="val_acc",
        monitor_mode="max",
        presets={
            # Learns the demo set on a 2-core CPU in about a minute.
            QUICK_PRESET: {"image_size": 64, "batch_size": 32, "max_epochs": 8, "lr": 1e-3, "num_workers": 0},
        },
        choices={**COMMON_CHOICES, "cam_layer": ("layer4", "layer3")},
        help={
            **COMMON_HELP,
            "image_size": "slices are resized to image_size x image_size (BraTS: 240)",
            "lr": "Adam learning rate",
            "weight_decay": "Adam weight decay",
            "val_fraction": "share of patients per grade held out for validation (split by patient, seeded)",
            "min_tumour_pixels": "a slice is used when its mask has at least this many tumour voxels",
            "augment": "random left-right and up-down flips of the training slices",
            "early_stop_patience": "stop after this many epochs without a better val_acc (0 = off)",
            "save_top_k": "keep the best k checkpoints by slice-level validation accuracy",
            "cam_layer": "the ResNet stage Grad-CAM reads (layer3 is finer at small image sizes)",
            "weights_path": "local ImageNet ResNet-18 weights (the stem's RGB filters are averaged into "
            "4 channels); empty = train from scratch (never downloads)",
        },
    )
)
