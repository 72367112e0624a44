"""One prediction path for every family: `load_predictor(...).predict(volume) -> Prediction`.

`predict_to_dir(...)` (the CLI) and the pages go through it; `core.predictions` stores every kind.

A checkpoint written by the training engine holds, under its `slicewise` key, the
family name, the model's constructor arguments, the settings and the normalisation
stats; nothing else is needed to predict. Checkpoints load with `torch.load(...,
weights_only=True)`: only plain types and tensors, no pickled code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.errors import CheckpointError, VolumeReadError
from core.predictions import Prediction, save_prediction

__all__ = ["Prediction", "load_predictor", "predict_to_dir", "read_checkpoint", "best_checkpoint_of_run"]

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 4
MODEL_PREFIX = "model."


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's self-description plus its model weights (`state_dict` without the `model.` prefix)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only checkpoint ({exc})") from None
    meta = raw.get("slicewise") if isinstance(raw, dict) else None
    if not isinstance(meta, dict) or "family" not in meta or "model_args" not in meta:
        raise CheckpointError(f"{path}: not a Slicewise checkpoint (no family / model_args recorded)")
    weights = raw.get("state_dict") or {}
    state = {k[len(MODEL_PREFIX) :]: v for k, v in weights.items() if k.startswith(MODEL_PREFIX)}
    if not state:
        raise CheckpointError(f"{path}: holds no model weights")
    return {**meta, "state_dict": state, "path": str(path), "epoch": raw.get("epoch")}


def best_checkpoint_of_run(run_dir: Path) -> Path:
    """A run folder's best checkpoint (core.runs decides), or a CheckpointError."""
    from core.runs import require_best_checkpoint

    return require_best_checkpoint(Path(run_dir))


def _as_paths(checkpoint: Path | str | Sequence[Path | str]) -> list[Path]:
    if isinstance(checkpoint, str | Path):
        text = str(checkpoint)
        if "," in text and not Path(text).exists():  # `--checkpoint a.ckpt,b.ckpt`: an ensemble
            return [_one_path(p.strip()) for p in text.split(",") if p.strip()]
        return [_one_path(checkpoint)]
    return [_one_path(p) for p in checkpoint]


def _one_path(checkpoint: Path | str) -> Path:
    """A checkpoint file, or a run folder standing for its best checkpoint."""
    path = Path(checkpoint)
    return best_checkpoint_of_run(path) if path.is_dir() else path


def _cache_key(paths: list[Path], device: str) -> tuple:
    stamps = []
    for path in paths:
        try:
            stamps.append((str(path.resolve()), path.stat().st_mtime_ns))
        except OSError:
            raise CheckpointError(f"{path}: checkpoint file not found") from None
    return (tuple(stamps), device)


def predictor_name(payloads: list[dict[str, Any]]) -> str:
    """`lung_localizer/resnet50/epoch012-val_loss1.2.ckpt` (several joined by `+` for an ensemble)."""
    parts = ["/".join([p["family"], *([str(p["model_args"]["backbone"])] if p["model_args"].get("backbone")
                                      else []), Path(p["path"]).name]) for p in payloads]
    return " + ".join(parts)


def load_predictor(checkpoint: Path | str | Sequence[Path | str], device: str | None = None) -> Any:
    """A predictor for one checkpoint, a run folder (its best checkpoint) or several checkpoints of one
    family (an ensemble, where the family supports it); cached by (path, mtime).

    The predictor has `.family`, `.name` and `.predict(volume) -> Prediction` (a patient folder's
    path instead of a Volume for families whose spec says `input_kind="patient_folder"`).
    """
    from core.device import choose_device
    from core.models import get_spec

    device = choose_device(device)
    paths = _as_paths(checkpoint)
    if not paths:
        raise CheckpointError("no checkpoint given")
    key = _cache_key(paths, device)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    payloads = [read_checkpoint(p) for p in paths]
    families = {p["family"] for p in payloads}
    if len(families) != 1:
        raise CheckpointError(
            f"{', '.join(map(str, paths))}: an ensemble needs one family, got {sorted(families)}"
        )
    family = families.pop()
    try:
        spec = get_spec(family)
    except KeyError as exc:
        raise CheckpointError(f"{paths[0]}: {exc.args[0]}") from None
    if spec.make_predictor is None:
        raise CheckpointError(f"{paths[0]}: family {family} has no predictor")
    try:
        predictor = spec.make_predictor(payloads, device, predictor_name(payloads))
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{paths[0]}: weights do not fit the recorded model ({exc})") from None
    with _CACHE_LOCK:
        while len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = predictor
    return predictor


def _input_volumes(source: Path) -> list[Path]:
    """A loadable file or folder, else the loadable things found under a folder."""
    from core.io import find_volumes

    if source.is_file():
        return [source]
    if not source.is_dir():
        raise VolumeReadError(source, "input not found")
    found = find_volumes(source)
    if not found:
        raise VolumeReadError(source, "no volumes found (DICOM series, NIfTI, NRRD or images)")
    return found


def _patient_folders(source: Path) -> list[Path]:
    """A patient folder itself (it holds files), else the folders under it."""
    if not source.is_dir():
        raise VolumeReadError(source, "input not found (a patient folder or a folder of them)")
    if any(p.is_file() for p in source.iterdir()) and not any(p.is_dir() for p in source.iterdir()):
        return [source]
    found = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise VolumeReadError(source, "no patient folders found")
    return found


def predict_inputs(spec: Any, source: Path) -> list[Path]:
    """What `predict_to_dir` runs the family on under `source`: volumes, or patient folders."""
    source = Path(source)
    return _patient_folders(source) if spec.input_kind == "patient_folder" else _input_volumes(source)


def reference_volume(predictor: Any, item: Any) -> Any:
    """The Volume a prediction of `item` belongs to (its geometry and id key the store)."""
    from core.io import load_volume

    if not isinstance(item, str | Path):
        return item
    loader = getattr(predictor, "load_input", None)
    return loader(Path(item)) if loader is not None else load_volume(Path(item))


def predict_and_store(predictor: Any, item: Any, checkpoint: Path | str | Sequence[Path | str],
                      runs_root: Path | str | None = None) -> tuple[Any, Prediction, Path]:
    """Predict one input (a Volume or a path), store the Prediction; (volume, prediction, sidecar path)."""
    volume = reference_volume(predictor, item)
    prediction = _predict_one(predictor, item, volume)
    sidecar = save_prediction(volume, prediction, _as_paths(checkpoint), runs_root=runs_root)
    return volume, prediction, sidecar


def _predict_one(predictor: Any, item: Any, volume: Any) -> Prediction:
    """A family that takes a Volume gets the loaded one; a patient-folder family gets the path."""
    from core.models import get_spec

    takes_path = get_spec(predictor.family).input_kind != "volume" and isinstance(item, str | Path)
    return predictor.predict(item if takes_path else volume)


def predict_to_dir(
    checkpoint: Path | str | Sequence[Path | str],
    input: Path,
    out: Path,
    progress: Callable[[str], Any] = print,
    runs_root: Path | str | None = None,
) -> Path:
    """Predict every input under `input` and write what the family gives into `out`:

    boxes -> `lung_bbox_predicted.csv` (lung_bbox.csv columns); label/probabilities ->
    `probabilities.csv`; slice_probabilities -> `<name>_slice_probabilities.csv`; mask ->
    `<name>_mask.nrrd` and heatmap -> `<name>_heatmap.nrrd` with the input's spacing.
    With `runs_root`, each prediction is also stored in `<runs_root>/predictions/`
    (core.predictions), where the Viewer and Predict & review find it. Returns the first CSV
    written (the boxes, or the probabilities), else `out`.
    """
    from core.models import get_spec
    from core.prediction_files import PredictionWriter

    predictor = load_predictor(checkpoint)
    spec = get_spec(predictor.family)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = PredictionWriter(out, predictor.name)
    for item in predict_inputs(spec, Path(input)):
        if runs_root is not None:
            volume, prediction, _ = predict_and_store(predictor, item, checkpoint, runs_root)
        else:
            volume = reference_volume(predictor, item)
            prediction = _predict_one(predictor, item, volume)
        written = writer.add(volume, prediction)
        progress(f"{volume.volume_id}: {volume.shape[0]} slices predicted "
                 f"({', '.join(prediction.fields) or 'nothing'}) -> {', '.join(p.name for p in written)}")
    tables = writer.close()
    progress(f"predictions written to {out}")
    return tables[0] if tables else out
