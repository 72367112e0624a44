"""A persistent store of predicted lung boxes, one set per (checkpoint, volume).

Layout under the runs folder (SPEC section 6 keeps everything a model produced there):

    <runs root>/predictions/<safe volume id>/<safe model label>.csv   boxes, lung_bbox.csv schema
    <runs root>/predictions/<safe volume id>/<safe model label>.json  sidecar: checkpoint(s), mtime, created

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core import settings
from core.annotations import COLUMNS, atomic_write_text
from core.errors import SlicewiseError
from core.render import OverlayLayer
from core.volume import Volume

Box = tuple[float, float, float, float]
STORE_DIR = "predictions"
OVERLAY_PREFIX = "Predicted boxes — "
# Distinct from the truth (yellow), annotated (cyan), lung-mask (green) and lesion (magenta) overlays.
PREDICTED_BOX_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 64, 64), (255, 150, 0), (170, 110, 255))
PREDICTED_BOX_COLOUR_NAMES = ("red", "orange", "violet")


class PredictionStoreError(SlicewiseError):
    """A saved prediction set (CSV or sidecar) is missing or malformed; the message names the file."""


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


def _family_of(paths: tuple[Path, ...]) -> str:
    from core.infer import read_checkpoint  # imports torch: only when the caller did not say

    return str(read_checkpoint(paths[0])["family"])


# ---------------------------------------------------------------- save


def save_predictions(volume: Volume, boxes: np.ndarray, checkpoint: Path | str | Sequence[Path | str], *,
                     family: str | None = None, runs_root: Path | str | None = None) -> Path:
    """Store a predictor's (z, 4) fraction boxes for `volume`; returns the CSV's path.

    Replaces an earlier set of the same checkpoint for the volume. `family` is read from the
    checkpoint when not given (that loads torch).
    """
    from core.review import boxes_csv, predicted_boxes

    paths = _as_paths(checkpoint)
    try:
        by_slice = predicted_boxes(boxes)
    except ValueError as exc:
        raise PredictionStoreError(f"{paths[0]}: {exc}") from None
    family = family or _family_of(paths)
    label = model_label(family, paths, runs_root)
    folder = volume_dir(volume.volume_id, runs_root)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"{safe_name(label)}.csv"
    atomic_write_text(csv_path, boxes_csv(by_slice, volume, label))
    sidecar = _sidecar(volume, label, family, paths)
    atomic_write_text(csv_path.with_suffix(".json"), json.dumps(sidecar, indent=1))
    return csv_path


def _sidecar(volume: Volume, label: str, family: str, paths: tuple[Path, ...]) -> dict:
    members = [{"path": str(p.resolve()), "mtime_ns": _mtime_ns(p)} for p in paths]
    first = members[0]
    return {
        "label": label,
        "family": family,
        "checkpoint": first["path"],
        "checkpoint_mtime": first["mtime_ns"] / 1e9 if first["mtime_ns"] is not None else None,
        "checkpoints": members,
        "volume_id": volume.volume_id,
        "slices": int(volume.shape[0]),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- list


def read_sidecar(csv_path: Path | str) -> PredictionSet:
    """The set described by the JSON next to `csv_path`, with its stale flag checked now."""
    csv_path = Path(csv_path)
    side = csv_path.with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        members = [(Path(m["path"]), m.get("mtime_ns")) for m in meta["checkpoints"]]
        label, created = str(meta["label"]), str(meta["created"])
    except OSError as exc:
        raise PredictionStoreError(f"{side}: cannot read the prediction sidecar ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise PredictionStoreError(f"{side}: not a prediction sidecar ({problem})") from None
    if not members:
        raise PredictionStoreError(f"{side}: not a prediction sidecar (no checkpoint recorded)")
    reason = stale_reason(members)
    return PredictionSet(label, csv_path, members[0][0], created, str(meta.get("family", "")),
                         tuple(p for p, _ in members), bool(reason), reason)


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
    for csv_path in sorted(folder.glob("*.csv")):
        try:
            found.append(read_sidecar(csv_path))
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


def prediction_layer(found: PredictionSet, boxes: dict[int, Box], position: int,
                     opacity: float = 1.0) -> OverlayLayer:
    """The Viewer's (hidden until toggled) box overlay for one saved set."""
    return OverlayLayer("boxes", boxes, colour=prediction_colour(position), opacity=opacity, visible=False,
                        label=found.overlay_name)


def describe(found: PredictionSet) -> str:
    """One line for a set: when it was predicted, and whether it is stale."""
    note = f"predicted {found.created.replace('T', ' ').replace('+00:00', ' UTC')}"
    return f"{note} · stale: {found.stale_reason}" if found.stale else note
