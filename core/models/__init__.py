"""Registry of model families: name -> ModelSpec.

A ModelSpec says everything the rest of the workbench needs about a family without
importing torch: its task, its settings (`defaults`, a flat dict of JSON-able values whose
types are the settings' types; the Train page builds its form from it), and lazy
references to the code that builds the network, prepares input, trains and predicts.
Adding a family means one module under `core/models/` (and its training pieces under
`core/train/`) plus one `register(...)` call here; no page changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REFERENCE_PRESET = "reference"

FAMILY_NAMES = ("lung_localizer", "xray_classifier", "ct_classifier", "vnet", "brain_mri")

# Settings every family has; families add their own and may override these values.
COMMON_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "precision": "auto",
    "num_workers": 2,
    "deterministic": True,
}

COMMON_CHOICES: dict[str, tuple] = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "32-true", "16-mixed", "bf16-mixed"),
}

COMMON_HELP: dict[str, str] = {
    "seed": "fixes the split order, initial weights and augmentations (also after resume)",
    "device": "auto = the GPU when there is one, else the CPU",
    "precision": "auto = bf16/16-bit mixed precision on a GPU, 32-bit on the CPU",
    "num_workers": "data-loader worker processes",
    "deterministic": "use deterministic algorithms where torch has them",
}


class LazyRef:
    """`"package.module:function"` imported on first call, so the registry never imports torch."""

    def __init__(self, target: str) -> None:
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"lazy reference must look like 'module:function', got {target!r}")
        self.target = target
        self._module, self._attr = module, attr

    def resolve(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self._module), self._attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyRef({self.target!r})"


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    build(**model_args) -> torch.nn.Module; model_args(settings) -> the constructor
    arguments (plain types; stored in every checkpoint); prepare_input(volume, meta) ->
    the network's input tensor for a Volume; make_training(settings, data_dir, run_dir) ->
    (LightningModule, LightningDataModule); make_predictor(checkpoint_payload, device) ->
    an object with `.family` and `.predict_volume(volume)`; write_predictions(predictor,
    volumes, out, progress) -> the output file (family-specific format).
    """

    name: str
    task: str
    title: str
    build: Callable[..., Any]
    defaults: dict[str, Any]
    model_args: Callable[[dict[str, Any]], dict[str, Any]]
    prepare_input: Callable[..., Any] | None = None
    make_training: Callable[..., Any] | None = None
    make_predictor: Callable[..., Any] | None = None
    write_predictions: Callable[..., Any] | None = None
    cam_layer: str | None = None
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    choices: dict[str, tuple] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # name -> settings that differ from `defaults` (e.g. a quick CPU run); the reference
    # settings themselves are the implicit first preset, REFERENCE_PRESET.
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values in self.presets.items():
            unknown = sorted(set(values) - set(self.defaults))
            if unknown:
                raise KeyError(f"{self.name}: preset {name!r} sets unknown settings {unknown}")
        for key, value in self.defaults.items():
            if not isinstance(value, bool | int | float | str):
                raise TypeError(f"{self.name}: default {key}={value!r} must be bool, int, float or str")
        for key, allowed in self.choices.items():
            if key not in self.defaults:
                raise KeyError(f"{self.name}: choices for unknown setting {key!r}")
            if self.defaults[key] not in allowed:
                raise ValueError(f"{self.name}: default {key}={self.defaults[key]!r} not in {allowed}")

    @property
    def early_stopping(self) -> bool:
        """Whether the family stops early (it has a positive `early_stop_patience` default)."""
        return int(self.defaults.get("early_stop_patience", 0)) > 0

    def preset_names(self) -> list[str]:
        return [REFERENCE_PRESET, *self.presets]

    def preset_settings(self, name: str) -> dict[str, Any]:
        """The full settings of a preset: the defaults with the preset's values on top."""
        if name != REFERENCE_PRESET and name not in self.presets:
            raise KeyError(f"{self.name}: unknown preset {name!r}; presets: {self.preset_names()}")
        return {**self.defaults, **self.presets.get(name, {})}

    def setting_types(self) -> dict[str, type]:
        return {key: type(value) for key, value in self.defaults.items()}


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a family; the name must be new."""
    if spec.name in _REGISTRY:
        raise KeyError(f"model family {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The spec of a family; a KeyError naming the registered families otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown model family {name!r}; registered families: {known}") from None


def list_specs() -> list[ModelSpec]:
    """Registered families in registration order."""
    return list(_REGISTRY.values())


def _family_defaults(own: dict[str, Any]) -> dict[str, Any]:
    return {**COMMON_DEFAULTS, **own}


LUNG_LOCALIZER_DEFAULTS: dict[str, Any] = _family_defaults(
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

register(
    ModelSpec(
        name="lung_localizer",
        task="box_regression",
        title="Lung localizer (CT slice -> lung box)",
        description=(
            "ResNet-50 (or EfficientNet-B0, or both as an ensemble) with a 1-channel stem regressing "
            "one box (Xmin, Ymin, Xmax, Ymax) covering both lungs on an axial CT slice."
        ),
        build=LazyRef("core.models.lung_localizer:build_model"),
        model_args=LazyRef("core.models.lung_localizer:model_args"),
        defaults=LUNG_LOCALIZER_DEFAULTS,
        prepare_input=LazyRef("core.models.lung_localizer:prepare_input"),
        make_training=LazyRef("core.train.lung:make_training"),
        make_predictor=LazyRef("core.models.lung_localizer:make_predictor"),
        write_predictions=LazyRef("core.models.lung_localizer:write_predictions"),
        cam_layer=None,
        monitor="val_loss",
        monitor_mode="min",
        presets={
            # What learns within about a minute on a 2-core CPU (README example).
            "quick CPU demo": {"backbone": "resnet18", "image_size": 128, "prepare_size": 128,
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
