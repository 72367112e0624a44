"""Two-stage VNet segmentation (SPEC 5D): settings, presets and the data-set rule. Imports no torch."""

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
        "network": "vnet",
        "width": 8,
        "locator_width": 8,
        "levels": 4,
        "kernel_size": 5,
        "attention": False,
        "attention_reduction": 4,
        "attention_dilation": 4,
        "loss": "dice",
        "focal_alpha": 0.25,
        "focal_gamma": 2.0,
        "boundary_start_epoch": 50,
        "boundary_dice_threshold": 0.7,
        "boundary_step": 0.01,
        "boundary_max_weight": 1.0,
        "max_epochs": 200,
        "locator_epochs": 200,
        "buffer": 30,
        "locator_scale": "0.5,0.25,0.25",
        "batch_size": 3,
        "locator_batch_size": 5,
        "lr": 3e-4,
        "locator_lr": 1e-4,
        "lr_factor": 0.8,
        "lr_patience": 7,
        "locator_lr_factor": 0.85,
        "locator_lr_patience": 15,
        "augment": True,
        "noise_std": 0.004,
        "rotate_deg": 3.0,
        "translate_vox": 5,
        "val_fraction": 0.2,
        "largest_component": True,
        "save_top_k": 1,
        "early_stop_patience": 0,
    }
)


def is_dataset(folder: Path, names: set) -> bool:
    """Case folders (image + label*/seg*/mask*/laendo*) or flat `<case>_image` + `<case>_label` pairs."""
    from core.models.vnet.data import looks_like_dataset

    return looks_like_dataset(folder, names)


SPEC = register(
    ModelSpec(
        name="vnet",
        task="segmentation",
        title="Two-stage VNet segmentation (locator -> crop -> segmenter)",
        description=(
            "A VNet locator on downscaled volumes finds the structure's box; a second VNet segments the "
            "crop around it (one crop size for all). Both networks are trained in one job and saved in "
            "one checkpoint. Reference: left atrium in 3D LGE-MRI."
        ),
        defaults=DEFAULTS,
        make_training=LazyRef("core.models.vnet.train:make_training"),
        make_predictor=LazyRef("core.models.vnet.predict:make_predictor"),
        outputs=("mask",),
        review="mask",
        modalities=(),
        dataset_rule=is_dataset,
        dataset_hint="one folder per case with an image and a label volume (.nrrd / .nii.gz; the label "
        "named label*, seg*, mask* or laendo*), or flat <case>_image / <case>_label pairs",
        demo_data=LazyRef("core.models.vnet.demo:write_demo"),
        demo_folder="segmentation",
        monitor="val_dice",
        monitor_mode="max",
        presets={
            # Learns the demo set (10 cases of ~40x80x80) on a 2-core CPU in a few minutes.
            QUICK_PRESET: {
                "width": 4,
                "locator_width": 4,
                "levels": 3,
                "kernel_size": 3,
                "max_epochs": 25,
                "locator_epochs": 40,
                "buffer": 6,
                "batch_size": 2,
                "locator_batch_size": 4,
                "lr": 3e-3,
                "locator_lr": 3e-3,
                "noise_std": 0.02,
                "num_workers": 0,
            },
            "attention": {"attention": True, "lr": 2.5e-4},
            "wider": {"width": 12, "lr": 1.5e-4},
            "hybrid": {"loss": "hybrid"},
        },
        choices={
            **COMMON_CHOICES,
            "network": ("vnet", "monai"),
            "loss": ("dice", "focal", "boundary", "hybrid"),
            "kernel_size": (3, 5),
            "levels": (1, 2, 3, 4),
            "attention_dilation": (3, 4),
        },
        help={
            **COMMON_HELP,
            "network": "vnet: this family's VNet (width is a setting; 11.4 M parameters at width 8); "
            "monai: MONAI's VNet (width fixed at 16, 45.6 M parameters)",
            "width": "filters of the segmenter's first stage (doubling per level); 8 ~ the reference's "
            "10.75 M parameters",
            "locator_width": "filters of the locator's first stage",
            "levels": "down-sampling steps of both networks (4 in the reference)",
            "kernel_size": "convolution size (5 in the reference; 3 is ~4x cheaper)",
            "attention": "bottleneck attention module (BAM) at the deepest encoder stage of the segmenter",
            "attention_reduction": "BAM channel reduction",
            "attention_dilation": "BAM spatial-branch dilation",
            "loss": "dice, focal, boundary (signed distance of the truth x probability) or hybrid "
            "(Dice + a growing boundary weight)",
            "boundary_start_epoch": "hybrid: the boundary weight starts growing at this epoch at the latest",
            "boundary_dice_threshold": "hybrid: ... or the epoch after validation Dice first reaches this",
            "boundary_step": "hybrid: boundary weight added per epoch once started",
            "boundary_max_weight": "hybrid: largest boundary weight",
            "max_epochs": "segmenter epochs",
            "locator_epochs": "locator epochs (trained first, inside the same job)",
            "buffer": "voxels added on each side of the located box before cropping",
            "locator_scale": "D,H,W factors of the locator's downscaled input",
            "batch_size": "segmenter batch size",
            "locator_batch_size": "locator batch size",
            "lr": "segmenter Adam learning rate (reference 3e-4; attention 2.5e-4; wider 1.5e-4)",
            "locator_lr": "locator Adam learning rate",
            "lr_factor": "segmenter ReduceLROnPlateau factor (on validation Dice)",
            "lr_patience": "segmenter ReduceLROnPlateau patience (epochs)",
            "augment": "horizontal flip, Gaussian noise, rotation about the depth axis, H/W translation",
            "noise_std": "Gaussian noise std on the [0, 1]-normalised image (1/255 ~ the reference's std 1)",
            "rotate_deg": "largest rotation about the depth axis (degrees)",
            "translate_vox": "largest translation along H and W (voxels)",
            "val_fraction": "held-out share of cases (validation and the evaluation after training)",
            "largest_component": "keep only the largest connected part of the predicted mask",
            "save_top_k": "keep the best k checkpoints by validation Dice (plus last.ckpt)",
            "early_stop_patience": "stop after this many epochs without a better validation Dice (0 = off)",
        },
    )
)
