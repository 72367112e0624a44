"""Inference from self-describing checkpoints: `load_predictor(...)` and `predict_to_dir(...)`.

A checkpoint written by the training engine holds, under its `slicewise` key, the
family name, the model's constructor arguments, the settings and the normalisation
stats; nothing else is needed to predict. Checkpoints load with `torch.load(...,
weights_only=True)`: only plain types and tensors, no pickled code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.errors import CheckpointError, VolumeReadError

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
    """A run folder's best checkpoint (its result.json), else its last.ckpt."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            best = json.loads(result.read_text()).get("best_checkpoint")
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{result}: unreadable run result ({exc})") from None
        if best and Path(best).is_file():
            return Path(best)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        return last
    raise CheckpointError(f"{run_dir}: a folder with neither a best checkpoint in result.json nor "
                          "checkpoints/last.ckpt")


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
    parts = [
        f"{p['family']}/{p['model_args'].get('backbone', p['family'])}/{Path(p['path']).name}"
        for p in payloads
    ]
    return " + ".join(parts)


def load_predictor(checkpoint: Path | str | Sequence[Path | str], device: str | None = None) -> Any:
    """A predictor for one checkpoint or several of one family (averaged); cached by (path, mtime)."""
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


class _StoringPredictor:
    """A box predictor that also saves each volume's boxes in core.predictions' store."""

    def __init__(self, predictor: Any, checkpoints: list[Path], runs_root: Path) -> None:
        self._predictor, self._checkpoints, self._runs_root = predictor, checkpoints, runs_root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def predict_volume(self, volume: Any, *args: Any, **kwargs: Any) -> Any:
        from core.predictions import save_predictions

        boxes = self._predictor.predict_volume(volume, *args, **kwargs)
        save_predictions(volume, boxes, self._checkpoints, family=self._predictor.family,
                         runs_root=self._runs_root)
        return boxes


def predict_to_dir(
    checkpoint: Path | str | Sequence[Path | str],
    input: Path,
    out: Path,
    progress: Callable[[str], Any] = print,
    runs_root: Path | str | None = None,
) -> Path:
    """Predict every volume under `input`; writes the family's output (a box CSV for the localizer).

    With `runs_root`, lung boxes are also saved per volume in `<runs_root>/predictions/`
    (core.predictions), where the Viewer and the Predict & review page find them.
    """
    from core.io import load_volume

    predictor = load_predictor(checkpoint)
    from core.models import get_spec

    spec = get_spec(predictor.family)
    if runs_root is not None and spec.task == "box_regression":
        predictor = _StoringPredictor(predictor, _as_paths(checkpoint), Path(runs_root))
    volumes = (load_volume(p) for p in _input_volumes(Path(input)))
    path = spec.write_predictions(predictor, volumes, Path(out), progress)
    progress(f"predictions written to {path}")
    return Path(path)
