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
        "head": "regress",
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
        # the reference (SPEC 5A) augmentation, narrow; presets quick and generalise widen it
        "aug_gamma": 0.3,
        "aug_rotate_deg": 10.0,
        "aug_scale": 0.1,
        "aug_translate": 0.08,
        "aug_flip": False,
        "aug_window": 0.0,
        "aug_noise": 0.0,
        "pretrained": True,
        "weights_path": "",
        "init_head_to_mean_box": True,
        "annotations_csv": "",
        "prepare_size": 512,
        "val_fraction": 0.2,
        "split": "auto",
        "include_proposals": False,
        "pseudo_labels": "off",
        "pseudo_label_weight": 0.3,
        "exclude_volumes": "",
    }
)

# Augmentation wide enough that a lung's position and size in the field say nothing about the box
# (issue 9): shifts up to a quarter of the field, 0.7-1.3 scale, small rotations (the box of the
# rotated corners stays tight), left-right flips, window / contrast jitter and noise.
WIDE_AUGMENTATION: dict[str, Any] = {
    "aug_gamma": 0.3, "aug_rotate_deg": 5.0, "aug_scale": 0.3, "aug_translate": 0.25,
    "aug_flip": True, "aug_window": 0.15, "aug_noise": 0.03,
}


def is_dataset(folder: Path, names: set) -> bool:
    """A prepared folder (`python -m core prepare`), or the demo folder (phantom truth boxes)."""
    return ("stats.json" in names and "boxes.csv" in names) or (
        "manifest.json" in names and "truth" in names)


def _annotation_csv(settings: dict | None) -> Path:
    from core.settings import annotations_path

    chosen = str((settings or {}).get("annotations_csv") or "")
    return Path(chosen).expanduser() if chosen else annotations_path()


def dataset_problem(folder: Path, settings: dict | None = None) -> str:
    """Why training on `folder` with `settings` (default: DEFAULTS) cannot work, or "": cheap checks of
    what the trainer would read (no pixels): a prepared folder needs train and validation slices; the
    data root (or the demo folder with an `annotations_csv`) needs annotated slices in that CSV (one
    series is enough: its slices are split in blocks, see prepare.slice_block_split) that are left
    once `exclude_volumes` is applied, and confirmed ones unless `include_proposals`."""
    import csv

    folder, settings = Path(folder), {**DEFAULTS, **(settings or {})}
    if (folder / "stats.json").is_file() and (folder / "boxes.csv").is_file():
        splits = {row.get("split") for row in csv.DictReader((folder / "boxes.csv").open(newline=""))}
        missing = [name for name in ("train", "val") if name not in splits]
        return f"{folder / 'boxes.csv'}: no {' or '.join(missing)} slices; prepare it again (split=blocks " \
            "holds out a block of slices when there is only one patient)" if missing else ""
    demo = (folder / "manifest.json").is_file() and (folder / "truth").is_dir()
    if demo and not settings.get("annotations_csv"):
        return ""  # the demo data set trains on its ground-truth boxes
    csv_path = _annotation_csv(settings)
    if not csv_path.is_file():
        return f"No lung boxes annotated yet ({csv_path} does not exist): draw boxes on the Annotate page, " \
            "or pick a prepared folder or the demo data"
    rows = [row for row in csv.DictReader(csv_path.open(newline="")) if row.get("Volume")]
    if not rows:
        return f"{csv_path}: no annotated slice yet: draw boxes on the Annotate page"
    excluded = _excluded(settings)
    kept = [row for row in rows if row["Volume"] not in excluded]
    if not kept:
        volumes = ", ".join(sorted({row["Volume"] for row in rows}))
        return (f"{csv_path}: every annotated volume is excluded by the setting exclude_volumes ({volumes}): "
                "clear it, or annotate another volume")
    from core.annotate import is_proposal

    if not settings.get("include_proposals") and all(is_proposal(row) for row in kept):
        return (f"{csv_path}: no confirmed box to train on, only {len(kept)} unconfirmed proposal(s) "
                "(left out while include_proposals is off): confirm boxes on the Annotate page, or set "
                "include_proposals to train on the proposals")
    return ""


def _excluded(settings: dict) -> set[str]:
    """The `exclude_volumes` setting (comma-separated volume ids) as a set."""
    return {v.strip() for v in str(settings.get("exclude_volumes") or "").split(",") if v.strip()}


def dataset_summary(folder: Path, settings: dict) -> str:
    """What training on `folder` with `settings` will use (markdown, one paragraph; "" when unknown):
    boxes (confirmed / proposals left out or included), series, slices, and the validation split."""
    import csv
    import json

    folder, settings = Path(folder), {**DEFAULTS, **(settings or {})}
    pseudo = str(settings.get("pseudo_labels")) == "rule"
    if (folder / "stats.json").is_file() and (folder / "boxes.csv").is_file():
        try:
            stats = json.loads((folder / "stats.json").read_text())
        except (OSError, ValueError):
            return ""
        text = (f"Prepared folder: {stats.get('n_train', '?')} training / {stats.get('n_val', '?')} "
                "validation slices")
        if stats.get("n_pseudo"):
            text += f", {stats['n_pseudo']} HU-rule pseudo-labels (weight {settings['pseudo_label_weight']})"
        if stats.get("split"):
            text += f"; validation split: {stats['split']}"
        return text + " (as prepared; the split settings apply when preparing)."
    if (folder / "manifest.json").is_file() and (folder / "truth").is_dir():
        try:
            cases = json.loads((folder / "manifest.json").read_text()).get("cases", [])
        except (OSError, ValueError):
            return ""
        n = sum(1 for c in cases if c.get("kind") == "chest_ct" and c.get("truth"))
        return (f"Demo data: the ground-truth lung boxes of {n} chest CT phantom(s); validation: "
                + ("whole phantoms held out." if n >= 2 and settings["split"] != "blocks"
                   else "a block of top slices of each phantom."))
    csv_path = _annotation_csv(settings)
    if not csv_path.is_file():
        return ""
    from core.annotate import is_proposal

    rows = [r for r in csv.DictReader(csv_path.open(newline="")) if r.get("Volume")]
    excluded = {v.strip() for v in str(settings.get("exclude_volumes") or "").split(",") if v.strip()}
    rows = [r for r in rows if r["Volume"] not in excluded]
    proposals = [r for r in rows if is_proposal(r)]
    confirmed = [r for r in rows if not is_proposal(r)]
    include = bool(settings.get("include_proposals"))
    used = rows if include else confirmed
    series = {r["Volume"] for r in used}
    text = f"{len(confirmed)} confirmed box(es)"
    if proposals:
        text += (f" + {len(proposals)} unconfirmed proposal(s) included (include_proposals)" if include else
                 f"; {len(proposals)} unconfirmed proposal(s) left out (set include_proposals to use them)")
    text += f": {len(used)} slice(s) from {len(series)} series."
    if not used:
        return text + " **Training will stop: no box to train on**; confirm boxes on the Annotate page."
    split = str(settings.get("split", "auto"))
    blocks = "a block of the top annotated slices of each series (2 slices between left out)"
    if split == "blocks" or (split == "auto" and len(series) == 1):
        text += f" Validation: {blocks}."
    elif split == "patient":
        text += " Validation: whole patients held out" + (
            " — **one series cannot be split by patient** (use split auto or blocks)."
            if len(series) < 2 else ".")
    else:
        text += (" Validation: whole patients held out when the series belong to two or more patients, "
                 f"else {blocks}.")
    if pseudo:
        text += (f" Pseudo-labels: HU-rule boxes of the unannotated slices of the training series join with "
                 f"weight {settings['pseudo_label_weight']}.")
    return text


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
        dataset_summary=dataset_summary,
        dataset_hint="a prepared folder (python -m core prepare), the demo folder, or the data root "
        "(its annotated slices are prepared first)",
        monitor="val_loss",
        monitor_mode="min",
        presets={
            # What learns within about a minute on a 2-core CPU (README example).
            # The profile head and the wide augmentation: the box follows the lungs, not their usual
            # place (issue 9; bench/bench_localizer.py measures it on real CT).
            QUICK_PRESET: {"backbone": "resnet18", "image_size": 128, "prepare_size": 128,
                           "batch_size": 16, "max_epochs": 5, "lr": 1e-3, "num_workers": 0,
                           "head": "profile", **WIDE_AUGMENTATION},
            # The reference ResNet-50 trunk and schedule with the profile head and wide augmentation.
            "generalise": {"head": "profile", **WIDE_AUGMENTATION},
        },
        choices={
            **COMMON_CHOICES,
            "backbone": ("resnet50", "efficientnet_b0", "ensemble", "resnet18"),
            "head": ("regress", "profile"),
            "split": ("auto", "patient", "blocks"),
            "pseudo_labels": ("off", "rule"),
        },
        help={
            **COMMON_HELP,
            "backbone": "resnet50 (reference), efficientnet_b0, ensemble (both, boxes averaged), "
            "resnet18 (fast, for tests)",
            "head": "regress (reference: pooled features -> 4 numbers) or profile (which columns and rows "
            "the box covers, read from a feature map: finds the lungs wherever they lie; resnet18/50)",
            "image_size": "network input size in pixels (square); boxes are clamped to [0, image_size]",
            "lr": "Adam learning rate",
            "lr_factor": "ReduceLROnPlateau factor on validation loss",
            "lr_patience": "ReduceLROnPlateau patience (epochs)",
            "save_top_k": "keep the best k checkpoints by validation loss (plus last.ckpt)",
            "early_stop_patience": "stop after this many epochs without a better validation loss (0 = off)",
            "augment": "gamma contrast and affine (scale, rotate, translate) moving image and box together",
            "aug_gamma": "gamma exponent drawn in 1 ± this",
            "aug_rotate_deg": "rotation up to ± this many degrees (the box encloses the rotated box)",
            "aug_scale": "zoom drawn in 1 ± this (0.3: 0.7-1.3)",
            "aug_translate": "shift up to ± this share of the field in x and y (0.25: a quarter)",
            "aug_flip": "left-right flip half of the slices (the box flipped with them)",
            "aug_window": "window jitter: contrast 1 ± this and brightness ± this/2 on the windowed slice",
            "aug_noise": "Gaussian noise with a standard deviation up to this (windowed units, 0-1)",
            "pretrained": "start from ImageNet weights when a local copy exists (never downloads)",
            "weights_path": "local ImageNet weights file; empty = look in the torchvision cache",
            "init_head_to_mean_box": "start the last layer's bias at the mean training box",
            "annotations_csv": "when --data is a data root: the lung_bbox.csv to prepare from "
            "(empty = the configured annotation file)",
            "prepare_size": "slice size the prepare step writes (when --data is not prepared yet)",
            "val_fraction": "validation share of patients, or of each series' slices with split blocks "
            "(when --data is not prepared yet)",
            "split": "validation hold-out when preparing: patient (whole patients), blocks (a block of top "
            "slices of each series, 2 slices left out between), auto (patient with two or more patients, "
            "else blocks)",
            "include_proposals": "also train on unconfirmed proposals (HU rule `auto`, or `model:` boxes); "
            "off: confirmed boxes only",
            "pseudo_labels": "rule: HU-rule boxes of the unannotated slices of the training series join "
            "training with a lower weight; off: annotated slices only",
            "pseudo_label_weight": "loss weight of a pseudo-labelled slice (annotated slices weigh 1)",
            "exclude_volumes": "comma-separated volume ids never used for training (e.g. a scored volume)",
        },
    )
)
