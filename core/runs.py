"""The one reader of a training run folder (layout: core.train.loop's docstring).

Jobs, inference, the catalog and the pages all ask here for a run's best checkpoint, its
best metric, its per-epoch metrics and its progress, so they cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
RUN_MARKERS = ("config.json", "metrics.jsonl", "progress.json", CHECKPOINT_DIR)


def read_json_dict(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} when missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def is_run(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in RUN_MARKERS)


def config(run: Path) -> dict[str, Any]:
    return read_json_dict(Path(run) / "config.json")


def result(run: Path) -> dict[str, Any]:
    return read_json_dict(Path(run) / "result.json")


def checkpoint_files(folder: Path) -> list[Path]:
    """Checkpoint files anywhere under `folder`, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())


def best_checkpoint(run: Path) -> Path | None:
    """result.json's best checkpoint when the run finished, else the newest non-last checkpoint,
    else last.ckpt; None when the run has none."""
    run = Path(run)
    value = result(run).get("best_checkpoint")
    if isinstance(value, str) and value:
        candidate = Path(value) if Path(value).is_absolute() else run / value
        if candidate.is_file():
            return candidate
    files = checkpoint_files(run / CHECKPOINT_DIR)
    pool = [p for p in files if p.stem != "last" and not p.stem.startswith("last-")] or files
    return max(pool, key=lambda p: p.stat().st_mtime) if pool else None


def last_checkpoint(run: Path) -> Path | None:
    """The checkpoint to resume from: `checkpoints/last.ckpt`, the newest state of the run. Runs written
    before the engine kept one canonical last checkpoint may hold `last-v1.ckpt` copies: the newest of
    them counts. None when there is none."""
    folder = Path(run) / CHECKPOINT_DIR
    found = [p for p in folder.glob("last*.ckpt") if p.stem == "last" or p.stem.startswith("last-v")]
    found = [p for p in found if p.is_file()]  # a dangling link is no checkpoint
    return max(found, key=lambda p: (p.stat().st_mtime, p.name == LAST_CHECKPOINT)) if found else None


def require_best_checkpoint(run: Path) -> Path:
    """best_checkpoint(run), or a CheckpointError naming the folder."""
    found = best_checkpoint(run)
    if found is None:
        raise CheckpointError(f"{run}: a run folder without checkpoints (no best checkpoint in result.json, "
                              f"nothing under {CHECKPOINT_DIR}/)")
    return found


def best_metric(run: Path) -> tuple[str, float] | None:
    """(monitored metric, best value) from result.json (`{"best_metric": {name: value}}`)."""
    found = result(run)
    best = found.get("best_metric")
    if isinstance(best, dict):
        for name, value in best.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(name), float(value)
        return None
    if isinstance(best, int | float) and not isinstance(best, bool):  # older runs: a bare number
        return str(found.get("monitor") or "best"), float(best)
    return None


def metrics(run: Path) -> list[dict[str, Any]]:
    """`metrics.jsonl`, one dict per epoch; a half-written last line is skipped."""
    path = Path(run) / "metrics.jsonl"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def progress(run: Path) -> dict[str, Any]:
    return read_json_dict(Path(run) / "progress.json")


def evaluation(run: Path) -> dict[str, Any]:
    """`evaluation.json`: what a family measured on its test split after training (may be {}).

    Known keys, drawn by the Train page's job detail and by Predict & review:
    `confusion_matrix` {"classes": [...], "matrix": [[...]]}, `roc` {"fpr": [...], "tpr": [...],
    "auc": x}, `summary` {name: number}, `cases` [{...} one per test case].
    """
    return read_json_dict(Path(run) / "evaluation.json")


def run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint file belongs to (`<run>/checkpoints/x.ckpt`), else None."""
    for parent in Path(checkpoint).parents:
        if (parent / "config.json").is_file():
            return parent
        if parent.name != CHECKPOINT_DIR and parent != Path(checkpoint).parent:
            break
    return None


def family_of_checkpoint(checkpoint: Path) -> str:
    """The family of a checkpoint (file or run folder) from its run's config.json, else from the file
    itself (that loads torch); "" when neither says."""
    checkpoint = Path(checkpoint)
    run = checkpoint if checkpoint.is_dir() else run_of_checkpoint(checkpoint)
    family = config(run).get("family") if run is not None else None
    if isinstance(family, str) and family:
        return family
    if checkpoint.is_file():
        from core.infer import read_checkpoint

        return str(read_checkpoint(checkpoint).get("family", ""))
    return ""
