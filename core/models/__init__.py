"""Registry of model families: name -> ModelSpec.

A ModelSpec says everything the rest of the workbench needs about a family without
importing torch: its task, its settings (`defaults`, a flat dict of JSON-able values whose
types are the settings' types; the Train page builds its form from it), and lazy
references to the code that builds the network, prepares input, trains and predicts.
Adding a family means one folder `core/models/<family>/` whose `spec.py` calls `register(...)`;
the registry imports every such spec.py on first use. No page, job or inference code changes.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_PRESET = "reference"
QUICK_PRESET = "quick"

FAMILY_NAMES = ("lung_localizer", "xray_classifier", "ct_classifier", "vnet", "brain_mri")

# Settings every family has; families add their own and may override these values.
COMMON_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "devices": 0,
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
    "devices": "processes to train with (DDP): 0 = every GPU (DDP when several), one process on the CPU; "
               "N = N GPUs, or N CPU processes (DDP over gloo; batch_size is per process)",
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


OUTPUT_FIELDS = ("boxes", "label", "probabilities", "slice_probabilities", "heatmap", "mask")
# How Predict & review shows a family's predictions: pages/_ui/review_<kind>.py draws each kind.
REVIEW_KINDS = ("boxes", "image_classes", "volume_classes", "mask")
# What `predict` takes: a Volume, or (brain_mri) a patient folder of co-registered sequences.
INPUT_KINDS = ("volume", "patient_folder")

DatasetRule = Callable[[Path, set], bool]


@dataclass(frozen=True)
class ModelSpec:
    """One model family, declared in `core/models/<family>/spec.py` (which imports no torch).

    make_training(settings, data_dir, run_dir) -> (LightningModule, LightningDataModule); the
    module has `.model` (the network), `.model_args` and `.settings` (plain types) and may have
    `.describe() -> dict` (plain types: normalisation stats, class names, crop sizes, ...): the
    engine writes all of it into every checkpoint, so a family never writes its own description.
    make_predictor(payloads, device, name) -> an object with `.family`, `.name` and
    `.predict(volume) -> core.infer.Prediction` (payloads: the checkpoints' descriptions with
    their `state_dict`). `outputs` names the Prediction fields the family fills, `review` how
    Predict & review shows them, `dataset_rule(folder, entry_names)` which folders under the data
    root the Train page offers, `modalities` which volumes suit it (empty: any), `demo_data`
    (optional) writes the family's part of the demo data set into `<demo root>/<demo_folder>`:
    (demo_root, seed, small, progress) -> manifest cases (dicts with at least "kind" and "path").
    """

    name: str
    task: str
    title: str
    defaults: dict[str, Any]
    make_training: Callable[..., Any] | None = None
    make_predictor: Callable[..., Any] | None = None
    outputs: tuple[str, ...] = ()
    review: str = "boxes"
    input_kind: str = "volume"
    modalities: tuple[str, ...] = ()
    dataset_rule: DatasetRule | None = None
    dataset_hint: str = ""
    # (folder, settings) -> "" when training on it with those settings (over `defaults`) can work, else
    # why not (the Train page shows it and disables Start); a check taking only (folder) works too
    dataset_check: Callable[..., str] | None = None
    # (folder, settings) -> markdown, "" when nothing to say: what training on that folder will use
    # (e.g. "12 confirmed boxes from 1 patient; 30 proposals left out; validation: a block of top slices")
    dataset_summary: Callable[[Path, dict], str] | None = None
    demo_data: Callable[..., Any] | None = None
    demo_folder: str = ""  # the folder under the demo root that demo_data writes (replaces a base step)
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    choices: dict[str, tuple] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # name -> settings that differ from `defaults` (e.g. a quick CPU run); the reference
    # settings themselves are the implicit first preset, REFERENCE_PRESET. Every family has QUICK_PRESET.
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
        unknown_outputs = sorted(set(self.outputs) - set(OUTPUT_FIELDS))
        if unknown_outputs:
            raise ValueError(f"{self.name}: unknown outputs {unknown_outputs}; known: {OUTPUT_FIELDS}")
        if self.review not in REVIEW_KINDS:
            raise ValueError(f"{self.name}: review kind {self.review!r} not in {REVIEW_KINDS}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"{self.name}: input kind {self.input_kind!r} not in {INPUT_KINDS}")

    def preset_names(self) -> list[str]:
        return [REFERENCE_PRESET, *self.presets]

    def preset_settings(self, name: str) -> dict[str, Any]:
        """The full settings of a preset: the defaults with the preset's values on top."""
        if name != REFERENCE_PRESET and name not in self.presets:
            raise KeyError(f"{self.name}: unknown preset {name!r}; presets: {self.preset_names()}")
        return {**self.defaults, **self.presets.get(name, {})}

    def setting_types(self) -> dict[str, type]:
        return {key: type(value) for key, value in self.defaults.items()}

    def suits(self, modality: str) -> bool:
        """Whether a volume of this modality suits the family (empty `modalities`: any)."""
        return not self.modalities or modality in self.modalities


_REGISTRY: dict[str, ModelSpec] = {}
_DISCOVERED = False
_PLUGINS: set[str] = set()
PLUGIN_ENV = "SLICEWISE_FAMILY_MODULES"


def register(spec: ModelSpec) -> ModelSpec:
    """Add a family; the name must be new."""
    if spec.name in _REGISTRY:
        raise KeyError(f"model family {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def discover() -> None:
    """Import `core.models.<family>.spec` for every family folder (each registers itself), once; then
    any module named in `SLICEWISE_FAMILY_MODULES` (comma-separated: families kept outside this tree)."""
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: _family_order(i.name)):
            if info.ispkg and (Path(__path__[0]) / info.name / "spec.py").is_file():
                importlib.import_module(f"{__name__}.{info.name}.spec")
    for name in os.environ.get(PLUGIN_ENV, "").split(","):
        if name.strip() and name.strip() not in _PLUGINS:
            _PLUGINS.add(name.strip())
            importlib.import_module(name.strip())


def _family_order(name: str) -> tuple[int, str]:
    return (FAMILY_NAMES.index(name) if name in FAMILY_NAMES else len(FAMILY_NAMES), name)


def family_defaults(own: dict[str, Any]) -> dict[str, Any]:
    """COMMON_DEFAULTS with a family's own settings on top."""
    return {**COMMON_DEFAULTS, **own}


def get_spec(name: str) -> ModelSpec:
    """The spec of a family; a KeyError naming the registered families otherwise."""
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown model family {name!r}; registered families: {known}") from None


def list_specs() -> list[ModelSpec]:
    """Registered families in registration order."""
    discover()
    return list(_REGISTRY.values())


