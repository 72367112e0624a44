"""Proposals from a trained lung localizer, and which slices the model is least sure of.

- `lung_runs(runs_root)`: finished lung-localizer runs whose best checkpoint can propose boxes,
  newest first, each with a label "name · val_iou 0.83 · 2026-11-30 05:12".
- `propose_with_model(store, volume, run, ...)`: the run's boxes stored as proposals under the
  annotator `model:<run name>` (one undo step); a person's box is never replaced.
- `uncertainty_order(volume, run, annotated_slices, method)`: the slices without a person's box,
  most uncertain first, the way MONAI Label's active-learning strategies (its TTA and epistemic
  strategies: disagreement of predictions under augmentation / dropout) pick the next image: the
  radiologist spends time where the model is weakest.

  * "tta" (test-time augmentation): the model predicts each slice under a few transforms (identity,
    left-right flip, two diagonal shifts by `TTA_SHIFT` of the field, air filling the uncovered
    border); every box is mapped back to the original image (flip undone, shift subtracted) and
    the score is 1 - mean IoU of those boxes with their mean box. 0: the model follows the lungs
    wherever they are; high: its box does not move with the image (it learned a position) or
    jumps about. Costs four predictions of the slices to order (the identity one is shared with
    `propose_with_model`).
  * "rule": 1 - IoU(model box, HU-rule box of core.propose). A slice where the rule finds no lung
    scores 1. Cheap (one prediction) and a fair stand-in for truth where the rule works (on
    LIDC-IDRI-0001 the rule's boxes match an independent lung segmentation at mean IoU 0.97), but
    it also ranks slices without lungs first (the rule finds none, the model still gives a box).

Predictors are loaded through `core.infer.load_predictor` and kept in a small LRU per run and
checkpoint mtime; whole-volume predictions and uncertainty scores are kept per (run, volume) so
that proposing, ordering and re-ordering the same volume does not predict it again.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from core import runs
from core.annotate import MODEL_ANNOTATOR_PREFIX, is_proposal, volume_boxes
from core.annotations import BoxStore
from core.boxes import Box, box_iou, ordered_box
from core.errors import CheckpointError
from core.volume import Volume

FAMILY = "lung_localizer"
MIN_BOX_SIDE = 0.01  # a predicted box narrower or lower than this share of the slice is no box
TTA_SHIFT = 0.06  # share of the field the TTA shifts move the image by
FEW_SLICES = 8  # up to this many slices are predicted alone; more: the whole volume, kept
METHODS = ("tta", "rule")
_LIVE_STATES = ("SUBMITTED", "QUEUED", "RUNNING")
_PREDICTORS_MAX = 4
_BOXES_MAX = 8


# ----------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class LungRun:
    """A finished lung-localizer run that can propose boxes."""

    path: Path
    checkpoint: Path
    val_iou: float | None
    finished: str  # ISO time from result.json ("" when it has none)
    finished_ts: float
    origin: str = ""  # job.json's "origin": "annotate" for runs started from the Annotate page

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def annotator(self) -> str:
        return model_annotator(self)

    @property
    def label(self) -> str:
        """"name · val_iou 0.83 · 2026-11-30 05:12"."""
        parts = [self.name]
        if self.val_iou is not None:
            parts.append(f"val_iou {self.val_iou:.2f}")
        parts.append(datetime.fromtimestamp(self.finished_ts).strftime("%Y-%m-%d %H:%M"))
        return " · ".join(parts)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def run_val_iou(run: Path) -> float | None:
    """val_iou of the epoch whose checkpoint is the best (the monitored metric's best value), else
    the last epoch's, else result.json's final metrics; None when the run logged none."""
    rows = [r for r in runs.metrics(run) if _number(r.get("val_iou")) is not None]
    best = runs.best_metric(run)
    if rows and best is not None:
        name, value = best
        scored = [r for r in rows if _number(r.get(name)) is not None]
        if scored:
            return float(min(scored, key=lambda r: abs(float(r[name]) - value))["val_iou"])
    if rows:
        return float(rows[-1]["val_iou"])
    return _number((runs.result(run).get("final_metrics") or {}).get("val_iou"))


def _finished(run: Path) -> tuple[str, float]:
    text = runs.result(run).get("finished")
    if isinstance(text, str) and text:
        try:
            return text, datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return "", (run / "result.json").stat().st_mtime


def lung_run(folder: Path | str) -> LungRun | None:
    """The run folder as a LungRun, or None when it is not a finished lung-localizer run with a
    checkpoint (still training, failed, another family)."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "result.json").is_file():
        return None
    if runs.family_of_checkpoint(folder) != FAMILY:
        return None
    job = runs.read_json_dict(folder / "job.json")
    if runs.read_json_dict(folder / "status.json").get("state") in _LIVE_STATES:
        return None  # resumed and training again: its checkpoints are being rewritten
    checkpoint = runs.best_checkpoint(folder)
    if checkpoint is None:
        return None
    finished, stamp = _finished(folder)
    return LungRun(folder, checkpoint, run_val_iou(folder), finished, stamp, str(job.get("origin") or ""))


def lung_runs(runs_root: Path | str) -> list[LungRun]:
    """Finished lung-localizer runs directly under `runs_root` that can propose boxes, newest first."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            run = lung_run(folder)
        except OSError:
            continue  # deleted while we looked
        if run is not None:
            found.append(run)
    return sorted(found, key=lambda r: (r.finished_ts, r.name), reverse=True)


def _as_run(run: LungRun | Path | str) -> LungRun:
    if isinstance(run, LungRun):
        return run
    found = lung_run(run)
    if found is None:
        raise CheckpointError(f"{run}: not a finished lung localizer run with a checkpoint")
    return found


def model_annotator(run: LungRun | Path | str) -> str:
    """`model:<run name>`: the annotator of the run's proposals (core.annotate.is_proposal)."""
    name = run.name if isinstance(run, LungRun) else Path(run).name
    return f"{MODEL_ANNOTATOR_PREFIX}{name}"


# ------------------------------------------------------------------------------------ predicting

_LOCK = threading.Lock()
_PREDICTORS: OrderedDict[tuple, Any] = OrderedDict()
_BOXES: OrderedDict[tuple, np.ndarray] = OrderedDict()
_PREFETCHING: set[tuple] = set()  # run+volume keys predicted in a background thread now


def _lru_put(cache: OrderedDict, key: tuple, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def _run_key(run: LungRun) -> tuple:
    try:
        stamp = run.checkpoint.stat().st_mtime_ns
    except OSError:
        raise CheckpointError(f"{run.checkpoint}: checkpoint file not found") from None
    return (str(run.path.resolve()), str(run.checkpoint), stamp)


def predictor_for(run: LungRun | Path | str) -> Any:
    """The run's predictor (core.infer.load_predictor of its best checkpoint), kept per run+mtime."""
    from core.infer import load_predictor

    run = _as_run(run)
    key = _run_key(run)
    with _LOCK:
        if key in _PREDICTORS:
            _PREDICTORS.move_to_end(key)
            return _PREDICTORS[key]
    predictor = load_predictor(run.checkpoint)
    if getattr(predictor, "family", FAMILY) != FAMILY:
        raise CheckpointError(f"{run.checkpoint}: a {predictor.family} checkpoint, not a lung localizer")
    with _LOCK:
        _lru_put(_PREDICTORS, key, predictor, _PREDICTORS_MAX)
    return predictor


def _sub_volume(volume: Volume, slices: Sequence[int], array: np.ndarray | None = None) -> Volume:
    """A Volume of some slices (the predictor reads only the pixels)."""
    index = list(slices)
    pixels = volume.array[index] if array is None else array
    return Volume(pixels, volume.spacing, volume.origin, volume.direction, volume.modality, volume.volume_id,
                  [volume.slice_ids[z] for z in index])


def _predict(run: LungRun, volume: Volume, slices: Sequence[int]) -> np.ndarray:
    """(len(slices), 4) boxes as fractions. Asked for more than a few slices, the whole volume is
    predicted once and kept per run and volume; a few slices (one slice's proposal) alone."""
    slices = list(slices)
    key = (*_run_key(run), volume.volume_id, tuple(volume.shape))
    with _LOCK:
        cached = _BOXES.get(key)
    if cached is not None:
        return cached[slices]
    if not slices:
        return np.zeros((0, 4))
    predictor = predictor_for(run)
    if len(slices) <= FEW_SLICES and volume.shape[0] > FEW_SLICES:
        return np.asarray(predictor.predict(_sub_volume(volume, slices)).boxes, dtype=np.float64)
    boxes = np.asarray(predictor.predict(volume).boxes, dtype=np.float64)
    with _LOCK:
        _lru_put(_BOXES, key, boxes, _BOXES_MAX)
    return boxes[slices]


def cached(volume: Volume, run: LungRun | Path | str) -> bool:
    """Whether the run's boxes for the whole volume are already predicted and kept."""
    run = _as_run(run)
    key = (*_run_key(run), volume.volume_id, tuple(volume.shape))
    with _LOCK:
        return key in _BOXES


def prefetch(volume: Volume, run: LungRun | Path | str) -> threading.Thread | None:
    """Predict the whole volume with the run in a background thread, so that a one-slice proposal
    (P) is then read from the kept boxes instead of a forward pass. Started once per run+volume
    (None when kept already or in flight). A failure here is left to the foreground call, which
    reports it with the file's name."""
    run = _as_run(run)
    try:
        key = (*_run_key(run), volume.volume_id, tuple(volume.shape))
    except CheckpointError:
        return None
    with _LOCK:
        if key in _BOXES or key in _PREFETCHING:
            return None
        _PREFETCHING.add(key)

    def work() -> None:
        try:
            _predict(run, volume, range(volume.shape[0]))
        except Exception:  # noqa: BLE001 - reported by the foreground call that needs the boxes
            pass
        finally:
            with _LOCK:
                _PREFETCHING.discard(key)

    thread = threading.Thread(target=work, name=f"slicewise-prefetch-{run.name}", daemon=True)
    thread.start()
    return thread


def usable_box(values: Iterable[float] | None) -> Box | None:
    """A predicted box with its corners ordered and clipped; None when degenerate (not finite, or
    narrower / lower than MIN_BOX_SIDE of the slice)."""
    box = ordered_box(None if values is None else list(values))
    if box is None or box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
        return None
    return box


def predict_boxes(volume: Volume, run: LungRun | Path | str,
                  slices: Iterable[int] | None = None) -> dict[int, Box | None]:
    """{z: box or None (degenerate)} of the run's model on the given slices (default: all)."""
    run = _as_run(run)
    wanted = sorted(set(range(volume.shape[0]) if slices is None else (int(z) for z in slices)))
    if any(not 0 <= z < volume.shape[0] for z in wanted):
        raise IndexError(f"slices {wanted} outside the volume's 0..{volume.shape[0] - 1}")
    raw = _predict(run, volume, wanted)
    return {z: usable_box(b) for z, b in zip(wanted, raw, strict=True)}


def propose_with_model(store: BoxStore, volume: Volume, run: LungRun | Path | str,
                       slices: Iterable[int] | None = None, overwrite: bool = False) -> int:
    """Store the run's boxes as proposals (annotator `model:<run>`, one undo step) on `slices`
    (default: every slice). A person's box is never replaced; a slice holding a proposal (rule or
    model) keeps it unless `overwrite`. Slices where the model's box is degenerate are skipped.
    Returns the number of boxes written."""
    run = _as_run(run)
    stored = volume_boxes(store, volume)
    candidates = range(volume.shape[0]) if slices is None else sorted({int(z) for z in slices})
    targets = [z for z in candidates
               if z not in stored or (overwrite and is_proposal(stored[z]))]
    if not targets:
        return 0
    boxes = predict_boxes(volume, run, targets)
    rows = [{"Image": volume.slice_ids[z], "Xmin": b[0], "Ymin": b[1], "Xmax": b[2], "Ymax": b[3],
             "Volume": volume.volume_id, "Slice": z} for z, b in boxes.items() if b is not None]
    return store.upsert_many(rows, annotator=model_annotator(run),  # re-checked under the lock
                             replace=lambda row: overwrite and is_proposal(row)) if rows else 0


# ------------------------------------------------------------------------------------ uncertainty


@dataclass(frozen=True)
class _Transform:
    """Flip x, then move the image content by (dx, dy) shares of the field."""

    flip: bool = False
    dx: float = 0.0
    dy: float = 0.0

    def apply(self, pixels: np.ndarray, fill: float) -> np.ndarray:
        out = pixels[:, :, ::-1] if self.flip else pixels
        _, height, width = out.shape
        sx, sy = round(self.dx * width), round(self.dy * height)
        if sx == 0 and sy == 0:
            return np.ascontiguousarray(out)
        moved = np.full(out.shape, fill, dtype=out.dtype)
        src_y, dst_y = _span(sy, height)
        src_x, dst_x = _span(sx, width)
        moved[:, dst_y, dst_x] = out[:, src_y, src_x]
        return moved

    def undo(self, box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A box predicted on the transformed image, in the original image's fractions."""
        height, width = shape
        x0, y0, x1, y1 = box
        sx, sy = round(self.dx * width) / width, round(self.dy * height) / height
        x0, x1, y0, y1 = x0 - sx, x1 - sx, y0 - sy, y1 - sy
        if self.flip:
            x0, x1 = 1.0 - x1, 1.0 - x0
        return np.array([x0, y0, x1, y1])


def _span(shift: int, n: int) -> tuple[slice, slice]:
    """(source, destination) index ranges moving content by `shift` pixels."""
    if shift >= 0:
        return slice(0, n - shift), slice(shift, n)
    return slice(-shift, n), slice(0, n + shift)


# Identity (its prediction is shared with the proposals), left-right flip, and two diagonal shifts:
# four predictions of the slices to order.
TTA_TRANSFORMS = (
    _Transform(),
    _Transform(flip=True),
    _Transform(dx=TTA_SHIFT, dy=TTA_SHIFT),
    _Transform(dx=-TTA_SHIFT, dy=-TTA_SHIFT),
)


def tta_spread(boxes: np.ndarray) -> float:
    """1 - mean IoU of the (t, 4) boxes with their mean box; a degenerate box counts as IoU 0."""
    usable = [usable_box(b) for b in boxes]
    kept = np.array([b for b in usable if b is not None])
    if not len(kept):
        return 1.0
    mean = tuple(float(v) for v in kept.mean(axis=0))
    return 1.0 - float(np.mean([box_iou(b, mean) if b is not None else 0.0 for b in usable]))


def _air(volume: Volume) -> float:
    return -1024.0 if volume.modality == "CT" else float(volume.array.min())


def tta_scores(volume: Volume, run: LungRun | Path | str, slices: Sequence[int]) -> dict[int, float]:
    """{z: TTA spread} (see the module docstring) of the given slices."""
    run = _as_run(run)
    slices = list(slices)
    if not slices:
        return {}
    predictor = predictor_for(run)
    height, width = volume.shape[1:]
    pixels = volume.array[slices]
    per_transform = []
    for transform in TTA_TRANSFORMS:
        if transform == _Transform():
            raw = _predict(run, volume, slices)
        else:
            moved = _sub_volume(volume, slices, transform.apply(pixels, _air(volume)))
            raw = np.asarray(predictor.predict(moved).boxes, dtype=np.float64)
        per_transform.append([transform.undo(b, (height, width)) for b in raw])
    stacked = np.asarray(per_transform).transpose(1, 0, 2)  # (slices, transforms, 4)
    return {z: tta_spread(boxes) for z, boxes in zip(slices, stacked, strict=True)}


_RULE_BOXES: OrderedDict[tuple, dict] = OrderedDict()


def rule_boxes(volume: Volume) -> dict[int, Box]:
    """core.propose.propose_volume of the volume, kept for the last few volumes."""
    from core.propose import propose_volume

    key = (volume.volume_id, tuple(volume.shape))
    with _LOCK:
        if key in _RULE_BOXES:
            return _RULE_BOXES[key]
    boxes = propose_volume(volume)
    with _LOCK:
        _lru_put(_RULE_BOXES, key, boxes, 4)
    return boxes


def rule_scores(volume: Volume, run: LungRun | Path | str, slices: Sequence[int]) -> dict[int, float]:
    """{z: 1 - IoU(model box, HU-rule box)}; 1 where the rule finds no lung or the model no box."""
    rule = rule_boxes(volume)
    model = predict_boxes(volume, run, slices)
    return {z: 1.0 - (box_iou(model[z], rule[z]) if model[z] is not None and z in rule else 0.0)
            for z in slices}


SCORERS: dict[str, Callable[[Volume, Any, Sequence[int]], dict[int, float]]] = {
    "tta": tta_scores, "rule": rule_scores}
_SCORES: OrderedDict[tuple, dict[int, float]] = OrderedDict()  # per run, volume and method


def uncertainty_order(volume: Volume, run: LungRun | Path | str, annotated_slices: Iterable[int],
                      method: str = "tta") -> list[tuple[int, float]]:
    """[(z, score)] of the slices not in `annotated_slices` (pass the slices holding a person's box:
    `core.annotation_review.confirmed_slices`), most uncertain first (ties: lower z first).
    `method`: "tta" or "rule" (module docstring). Scores are kept per run, volume and method: after
    the first call (one to four predictions of the slices), confirming slices and asking again
    costs nothing."""
    if method not in SCORERS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    run = _as_run(run)
    done = {int(z) for z in annotated_slices}
    todo = [z for z in range(volume.shape[0]) if z not in done]
    key = (*_run_key(run), volume.volume_id, tuple(volume.shape), method)
    with _LOCK:
        known = dict(_SCORES.get(key, {}))
    missing = [z for z in todo if z not in known]
    if missing:
        known.update(SCORERS[method](volume, run, missing))
        with _LOCK:
            _lru_put(_SCORES, key, known, _BOXES_MAX)
    return sorted(((z, float(known[z])) for z in todo), key=lambda item: (-item[1], item[0]))
