"""`Prediction`, what every family's predictor returns, and its store: one set per (checkpoint, volume).

Layout under the runs folder (SPEC section 6 keeps everything a model produced there):

    <runs root>/predictions/<safe volume id>/<safe model label>.json  sidecar: checkpoint(s), mtime, created,
                                                                       fields, label, probabilities, geometry
    <runs root>/predictions/<safe volume id>/<safe model label>.csv   boxes, lung_bbox.csv schema (boxes only)
    <runs root>/predictions/<safe volume id>/<safe model label>.npz   mask / heatmap / slice_probabilities,
                                                                       compressed (when the family has them)

The CSV's Annotator column is the model label, `<family>:<checkpoint name>`, so a set can be
loaded, corrected and saved like a person's annotations. Both files are written atomically
(temporary file, fsync, rename). A set whose checkpoint changed since the prediction (another
modification time, or the file is gone) is *stale*: it is still listed, with the reason, never hidden.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core import settings
from core.annotations import COLUMNS, atomic_write_text
from core.boxes import Box
from core.errors import SlicewiseError
from core.volume import Volume

STORE_DIR = "predictions"
OVERLAY_PREFIX = "Predicted boxes — "
ARRAY_FIELDS = ("mask", "heatmap", "slice_probabilities")
# Distinct from the truth (yellow), annotated (cyan), lung-mask (green) and lesion (magenta) overlays.
PREDICTED_BOX_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 64, 64), (255, 150, 0), (170, 110, 255))
PREDICTED_BOX_COLOUR_NAMES = ("red", "orange", "violet")


class PredictionStoreError(SlicewiseError):
    """A saved prediction set (CSV or sidecar) is missing or malformed; the message names the file."""


@dataclass
class Prediction:
    """What a predictor returns for one volume (SPEC 9): the fields that fit the family, None elsewhere.

    boxes: float32 (z, 4) fractions (xmin, ymin, xmax, ymax), NaN rows where no box.
    label / probabilities: the predicted class name and {class name: p}.
    slice_probabilities: float32 (z, classes) for slice-wise classifiers; `classes` names the columns.
    heatmap: float32 (z, y, x) in [0, 1] with the volume's shape (CAM, Grad-CAM).
    mask: uint8 (z, y, x) with the volume's shape (segmentation labels, 0 = background).
    extras: small plain values a family wants to keep with the prediction (e.g. the heatmap method).
    """

    family: str
    model: str = ""
    boxes: np.ndarray | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    slice_probabilities: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    heatmap: np.ndarray | None = None
    mask: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32)
            if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
                raise ValueError(f"{self.family}: predicted boxes must have shape (z, 4), "
                                 f"got {self.boxes.shape}")
        if self.heatmap is not None:
            self.heatmap = np.asarray(self.heatmap, dtype=np.float32)
            if self.heatmap.ndim != 3:
                raise ValueError(f"{self.family}: heatmap must be (z, y, x), got shape {self.heatmap.shape}")
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=np.uint8)
            if self.mask.ndim != 3:
                raise ValueError(f"{self.family}: mask must be (z, y, x), got shape {self.mask.shape}")
        if self.slice_probabilities is not None:
            self.slice_probabilities = np.asarray(self.slice_probabilities, dtype=np.float32)
            if self.slice_probabilities.ndim != 2:
                raise ValueError(f"{self.family}: slice_probabilities must be (z, classes), "
                                 f"got shape {self.slice_probabilities.shape}")
        if self.probabilities is not None:
            self.probabilities = {str(k): float(v) for k, v in self.probabilities.items()}
        if self.classes is not None:
            self.classes = tuple(str(c) for c in self.classes)

    @property
    def fields(self) -> tuple[str, ...]:
        """The output fields that are filled, in OUTPUT order."""
        names = ("boxes", "label", "probabilities", "slice_probabilities", "heatmap", "mask")
        return tuple(n for n in names if getattr(self, n) is not None)

    def check_shape(self, shape: tuple[int, int, int], source: str = "") -> None:
        """Raise PredictionStoreError unless the per-voxel and per-slice fields fit a volume of `shape`."""
        where = f"{source}: " if source else ""
        for name in ("heatmap", "mask"):
            array = getattr(self, name)
            if array is not None and tuple(array.shape) != tuple(shape):
                raise PredictionStoreError(f"{where}{name} has shape {array.shape}, "
                                           f"the volume {tuple(shape)}")
        for name in ("boxes", "slice_probabilities"):
            array = getattr(self, name)
            if array is not None and array.shape[0] != shape[0]:
                raise PredictionStoreError(f"{where}{name} has {array.shape[0]} rows, the volume "
                                           f"{shape[0]} slices")


@dataclass(frozen=True)
class PredictionSet:
    """One saved set of predicted boxes for a volume."""

    label: str  # `<family>:<checkpoint name>`, also the CSV's Annotator
    path: Path  # the CSV
    checkpoint: Path  # the first (usually only) checkpoint
    created: str  # ISO-8601 UTC time of the prediction
    family: str = ""
    checkpoints: tuple[Path, ...] = ()
    stale: bool = False
    stale_reason: str = ""  # "" when fresh
    fields: tuple[str, ...] = ("boxes",)
    sidecar: Path | None = None

    @property
    def has_boxes(self) -> bool:
        return "boxes" in self.fields

    @property
    def overlay_name(self) -> str:
        return f"{OVERLAY_PREFIX}{self.label}"


# ---------------------------------------------------------------- names and places


def store_root(runs_root: Path | str | None = None) -> Path:
    return Path(runs_root) if runs_root is not None else settings.runs_root()


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe, collision-free form of `text`: readable part plus a short hash of the whole."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:limit] or "x"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def volume_dir(volume_id: str, runs_root: Path | str | None = None) -> Path:
    return store_root(runs_root) / STORE_DIR / safe_name(str(volume_id))


def _as_paths(checkpoint: Path | str | Sequence[Path | str]) -> tuple[Path, ...]:
    if isinstance(checkpoint, str | Path):
        return (Path(checkpoint),)
    paths = tuple(Path(p) for p in checkpoint)
    if not paths:
        raise PredictionStoreError("no checkpoint given for the predictions")
    return paths


def checkpoint_name(checkpoint: Path, runs_root: Path | str | None = None) -> str:
    """`<run>/<file>` for a checkpoint under the runs folder (the `checkpoints/` level left out), else the
    file name."""
    path = Path(checkpoint).resolve()
    try:
        parts = path.relative_to(store_root(runs_root).resolve()).parts
    except ValueError:
        return path.name
    return "/".join(p for p in parts if p != "checkpoints")


def model_label(family: str, checkpoint: Path | str | Sequence[Path | str],
                runs_root: Path | str | None = None) -> str:
    """`lung_localizer:<run>/best.ckpt`; members of an ensemble joined by `+`."""
    return f"{family}:" + "+".join(checkpoint_name(p, runs_root) for p in _as_paths(checkpoint))


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


# ---------------------------------------------------------------- save


def save_prediction(volume: Volume, prediction: Prediction, checkpoint: Path | str | Sequence[Path | str], *,
                    runs_root: Path | str | None = None) -> Path:
    """Store any family's Prediction for `volume`; returns the sidecar's path.

    Replaces an earlier set of the same checkpoint(s) for the volume. Arrays are checked
    against the volume's shape first: a set is either stored whole or not at all (the
    sidecar, written last, is what makes a set visible).
    """
    paths = _as_paths(checkpoint)
    prediction.check_shape(volume.shape, str(paths[0]))
    label = model_label(prediction.family, paths, runs_root)
    folder = volume_dir(volume.volume_id, runs_root)
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / safe_name(label)
    if prediction.boxes is not None:
        from core.box_review import boxes_csv, predicted_boxes

        try:
            by_slice = predicted_boxes(prediction.boxes)
        except ValueError as exc:
            raise PredictionStoreError(f"{paths[0]}: {exc}") from None
        atomic_write_text(base.with_suffix(".csv"), boxes_csv(by_slice, volume, label))
    arrays = {n: getattr(prediction, n) for n in ARRAY_FIELDS if getattr(prediction, n) is not None}
    if arrays:
        _atomic_savez(base.with_suffix(".npz"), arrays)
    sidecar = _sidecar(volume, label, prediction, paths)
    atomic_write_text(base.with_suffix(".json"), json.dumps(sidecar, indent=1))
    return base.with_suffix(".json")


def save_predictions(volume: Volume, boxes: np.ndarray, checkpoint: Path | str | Sequence[Path | str], *,
                     family: str, runs_root: Path | str | None = None) -> Path:
    """Store a box predictor's (z, 4) fraction boxes for `volume`; returns the CSV's path."""
    paths = _as_paths(checkpoint)
    try:
        prediction = Prediction(family=family, boxes=boxes)
    except ValueError as exc:
        raise PredictionStoreError(f"{paths[0]}: {str(exc).split(': ', 1)[-1]}") from None
    sidecar = save_prediction(volume, prediction, paths, runs_root=runs_root)
    return sidecar.with_suffix(".csv")


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io as _io

    from core.annotations import atomic_write_bytes

    buffer = _io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _sidecar(volume: Volume, label: str, prediction: Prediction, paths: tuple[Path, ...]) -> dict:
    members = [{"path": str(p.resolve()), "mtime_ns": _mtime_ns(p)} for p in paths]
    first = members[0]
    return {
        "label": label,
        "family": prediction.family,
        "model": prediction.model,
        "fields": list(prediction.fields),
        "predicted_label": prediction.label,
        "probabilities": prediction.probabilities,
        "classes": list(prediction.classes) if prediction.classes else None,
        "extras": prediction.extras,
        "checkpoint": first["path"],
        "checkpoint_mtime": first["mtime_ns"] / 1e9 if first["mtime_ns"] is not None else None,
        "checkpoints": members,
        "volume_id": volume.volume_id,
        "slices": int(volume.shape[0]),
        "geometry": {"shape": list(volume.shape), "spacing": list(volume.spacing),
                     "origin": list(volume.origin), "direction": np.asarray(volume.direction).tolist()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- list


def read_sidecar(path: Path | str) -> PredictionSet:
    """The set described by the sidecar JSON (or the JSON next to a set's CSV), stale flag checked now."""
    side = Path(path).with_suffix(".json")
    csv_path = side.with_suffix(".csv")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        members = [(Path(m["path"]), m.get("mtime_ns")) for m in meta["checkpoints"]]
        label, created = str(meta["label"]), str(meta["created"])
        kinds = tuple(str(f) for f in meta.get("fields") or ("boxes",))
    except OSError as exc:
        raise PredictionStoreError(f"{side}: cannot read the prediction sidecar ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise PredictionStoreError(f"{side}: not a prediction sidecar ({problem})") from None
    if not members:
        raise PredictionStoreError(f"{side}: not a prediction sidecar (no checkpoint recorded)")
    reason = stale_reason(members)
    return PredictionSet(label, csv_path, members[0][0], created, str(meta.get("family", "")),
                         tuple(p for p, _ in members), bool(reason), reason, kinds, side)


def stale_reason(members: Sequence[tuple[Path, int | None]]) -> str:
    """Why predictions from these checkpoints (path, recorded mtime in ns) are out of date; "" if not."""
    for path, recorded in members:
        now = _mtime_ns(path)
        if now is None:
            return f"checkpoint {path.name} no longer exists"
        if recorded is None or int(recorded) != now:
            return f"checkpoint {path.name} changed after these predictions"
    return ""


def list_prediction_sets(volume_id: str, runs_root: Path | str | None = None,
                         on_error: Callable[[SlicewiseError], object] | None = None) -> list[PredictionSet]:
    """Every saved set for the volume, sorted by label (stable overlay colours).

    A set with a broken sidecar raises PredictionStoreError, or, with `on_error`, is reported there
    and left out so that the others still show.
    """
    folder = volume_dir(volume_id, runs_root)
    if not folder.is_dir():
        return []
    found = []
    stems = {p.stem for p in folder.iterdir() if p.suffix in (".json", ".csv", ".npz")}
    for stem in sorted(stems):  # a CSV or arrays without their sidecar are reported, not hidden
        try:
            found.append(read_sidecar(folder / f"{stem}.json"))
        except PredictionStoreError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return sorted(found, key=lambda s: s.label)


def find_prediction_set(volume_id: str, checkpoint: Path | str | Sequence[Path | str],
                        runs_root: Path | str | None = None) -> PredictionSet | None:
    """The saved set of exactly these checkpoint(s) for the volume (fresh or stale), else None."""
    wanted = tuple(p.resolve() for p in _as_paths(checkpoint))
    for found in list_prediction_sets(volume_id, runs_root, on_error=lambda _exc: None):
        if tuple(p.resolve() for p in found.checkpoints) == wanted:
            return found
    return None


# ---------------------------------------------------------------- load


def load_prediction(found: PredictionSet,
                    heatmap_as: Callable[[np.ndarray], np.ndarray] | None = None) -> Prediction:
    """The stored Prediction of a set (boxes from its CSV as a (z, 4) array with NaN rows).

    `heatmap_as` (a viewer's smaller type: e.g. uint8 0-255): the heatmap is read a slice at a time,
    each stored slice passed through it, and kept as it returns them (a Prediction otherwise holds
    float32): the heatmap is never whole at float32."""
    side = found.sidecar or found.path.with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PredictionStoreError(f"{side}: cannot read the prediction sidecar ({exc})") from None
    values: dict = {}
    if "boxes" in found.fields:
        boxes = np.full((int(meta.get("slices", 0)), 4), np.nan, dtype=np.float32)
        for z, box in load_prediction_set(found.path).items():
            if z < len(boxes):
                boxes[z] = box
        values["boxes"] = boxes
    heatmap = None
    if any(n in found.fields for n in ARRAY_FIELDS):
        npz = side.with_suffix(".npz")
        names = ARRAY_FIELDS if heatmap_as is None else tuple(n for n in ARRAY_FIELDS if n != "heatmap")
        values.update(load_arrays(npz, names))
        if heatmap_as is not None:
            heatmap = load_array_as(npz, "heatmap", heatmap_as)
    classes = meta.get("classes")
    prediction = Prediction(family=str(meta.get("family", found.family)), model=str(meta.get("model", "")),
                            label=meta.get("predicted_label"), probabilities=meta.get("probabilities"),
                            classes=tuple(classes) if classes else None, extras=meta.get("extras") or {},
                            **values)
    if heatmap is not None:
        if heatmap.ndim != 3:
            raise PredictionStoreError(f"{side.with_suffix('.npz')}: heatmap must be (z, y, x), "
                                       f"got shape {heatmap.shape}")
        prediction.heatmap = heatmap  # set after the checks: Prediction would make it float32 again
    return prediction


def load_arrays(path: Path, names: Sequence[str] = ARRAY_FIELDS) -> dict[str, np.ndarray]:
    """The mask / heatmap / slice_probabilities arrays of a set (no pickles), those in `names`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files if name in names}
    except (OSError, ValueError, KeyError) as exc:
        raise PredictionStoreError(f"{path}: cannot read the predicted arrays ({exc})") from None


def load_array_as(path: Path, name: str, convert: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """Array `name` of a set's .npz read one slice (first axis) at a time, each slice passed through
    `convert` (e.g. to a smaller type), or None when the file has no such array: no whole copy at the
    stored type (a float32 heatmap kept as uint8 peaks at its uint8 size, not at 1.25x its float32)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if f"{name}.npy" not in archive.namelist():
                return None
            with archive.open(f"{name}.npy") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, stored = read_header(handle)
                if fortran or stored.hasobject or len(shape) < 2:
                    whole = load_arrays(path, (name,))[name]
                    return np.stack([convert(plane) for plane in whole]) if len(whole) else whole
                size = int(np.prod(shape[1:], dtype=np.int64)) * stored.itemsize
                out = None
                for i in range(shape[0]):
                    block = handle.read(size)
                    if len(block) != size:
                        raise ValueError(f"{name} ends after {i} of {shape[0]} slices")
                    plane = np.asarray(convert(np.frombuffer(block, stored).reshape(shape[1:])))
                    if out is None:
                        out = np.empty((shape[0], *plane.shape), dtype=plane.dtype)
                    out[i] = plane
                return out if out is not None else np.empty(shape, dtype=stored)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise PredictionStoreError(f"{path}: cannot read the predicted arrays ({exc})") from None


def load_prediction_set(path: Path | str) -> dict[int, Box]:
    """{slice: (xmin, ymin, xmax, ymax)} from a saved set's CSV; a malformed line names the file and line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise PredictionStoreError(f"{path}: cannot read the predicted boxes ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PredictionStoreError(f"{path}: not a CSV file ({exc})") from None
    if not rows or tuple(rows[0]) != COLUMNS:
        header = ",".join(rows[0]) if rows else "empty file"
        raise PredictionStoreError(f"{path}: line 1: expected the columns {','.join(COLUMNS)}, got {header}")
    boxes: dict[int, Box] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        z, box = _parse_row(path, line, row)
        boxes[z] = box
    return boxes


def _parse_row(path: Path, line: int, row: list[str]) -> tuple[int, Box]:
    if len(row) != len(COLUMNS):
        raise PredictionStoreError(f"{path}: line {line}: expected {len(COLUMNS)} fields, got {len(row)}")
    record = dict(zip(COLUMNS, row, strict=True))
    try:
        z = int(record["Slice"])
        x0, y0, x1, y1 = (float(record[c]) for c in ("Xmin", "Ymin", "Xmax", "Ymax"))
    except ValueError:
        raise PredictionStoreError(f"{path}: line {line}: Slice must be an integer and the corners numbers, "
                                   f"got {row[1:5]} / {record['Slice']!r}") from None
    if z < 0 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise PredictionStoreError(f"{path}: line {line}: slice {z} box {row[1:5]} "
                                   "is not fractions in [0, 1]")
    if not (x0 < x1 and y0 < y1):
        raise PredictionStoreError(f"{path}: line {line}: empty box (need Xmin < Xmax and Ymin < Ymax)")
    return z, (x0, y0, x1, y1)


# ---------------------------------------------------------------- overlays


def prediction_colour(position: int) -> tuple[int, int, int]:
    """The overlay colour of the `position`-th set in `list_prediction_sets` order."""
    return PREDICTED_BOX_COLOURS[position % len(PREDICTED_BOX_COLOURS)]


def describe(found: PredictionSet) -> str:
    """One line for a set: when it was predicted, and whether it is stale."""
    note = f"predicted {found.created.replace('T', ' ').replace('+00:00', ' UTC')}"
    return f"{note} · stale: {found.stale_reason}" if found.stale else note
