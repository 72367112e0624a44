"""The annotation loop in one place: "Train on these boxes" from the Annotate page, its progress,
and the finished run whose boxes the page then offers as proposals (core.model_proposals).

- `training_set(annotations_csv, data_root, include_proposals)`: what a training started now would
  use (confirmed boxes; proposals only with `include_proposals`), with a one-line text for the page.
- `start_training(data_root, runs_root, annotations_csv, preset="quick", ...) -> job id`: a
  background training job (core.jobs) of the lung localizer on a snapshot of the annotations taken
  at Start (`<run>/annotations.csv`), so that boxes drawn meanwhile do not change a running job's
  data. The job records `"origin": "annotate"` in its job.json. Refused (LoopError) without
  confirmed boxes of CT volumes under the data root.
- `loop_status(runs_root, job_id) -> dict`: state, epoch, val_iou, run folder when done, error.
- `latest_loop_run(runs_root)`: the newest finished run started from Annotate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.annotate import is_proposal, proposal_source
from core.annotations import BoxStore
from core.errors import SlicewiseError
from core.model_proposals import FAMILY, LungRun, lung_run, lung_runs

LOOP_ORIGIN = "annotate"  # job.json "origin" of jobs started here
SNAPSHOT_NAME = "annotations.csv"  # the annotations a loop job trains on, inside its run folder


class LoopError(SlicewiseError, ValueError):
    """Training cannot start from these annotations; the message says why and what to do."""


# ---------------------------------------------------------------------------------- the training set


@dataclass(frozen=True)
class TrainingSet:
    """What a training started now would use."""

    confirmed: int  # confirmed boxes of CT volumes under the data root
    rule: int  # unconfirmed HU-rule proposals there
    model: int  # unconfirmed model proposals there
    volumes: int  # volumes with a confirmed box
    outside: int  # rows of volumes that are not CT volumes under the data root
    include_proposals: bool

    @property
    def proposed(self) -> int:
        return self.rule + self.model

    @property
    def used(self) -> int:
        return self.confirmed + (self.proposed if self.include_proposals else 0)

    def text(self) -> str:
        """"Trains on 12 confirmed boxes of 1 volume; 30 proposals (unconfirmed) left out"."""
        text = f"Trains on {self.confirmed:,} confirmed box{'es' if self.confirmed != 1 else ''} " \
            f"of {self.volumes} volume{'s' if self.volumes != 1 else ''}"
        if self.proposed:
            text += (f" and {self.proposed:,} unconfirmed proposals (include_proposals)"
                     if self.include_proposals else
                     f"; {self.proposed:,} proposal{'s' if self.proposed != 1 else ''} "
                     "(unconfirmed) left out")
        if self.outside:
            text += f"; {self.outside:,} box(es) of volumes not under the data root are not used"
        return text


def _rows_under(rows: Iterable[Mapping], data_root: Path | str | None,
                counts: Any = None) -> tuple[list[Mapping], int]:
    """(rows of CT volumes under the data root, how many rows are not); all rows without a root.
    `counts`: the root's `annotation_review.RootCounts` when the caller has them already."""
    rows = list(rows)
    if data_root is None and counts is None:
        return rows, 0
    if counts is None:
        from core.annotation_review import root_slice_counts

        counts = root_slice_counts(data_root)
    slices = counts.slices
    inside = [r for r in rows if 0 <= int(r["Slice"]) < slices.get(str(r["Volume"]), 0)]
    return inside, len(rows) - len(inside)


def training_set(annotations_csv: Path | str, data_root: Path | str | None = None,
                 include_proposals: bool = False, *, counts: Any = None) -> TrainingSet:
    """Counts of what `start_training` would train on (rows of CT volumes under `data_root`).
    `counts`: the data root's `annotation_review.RootCounts` when the caller has them (a page run
    reuses its cached counts instead of walking the root again)."""
    path = Path(annotations_csv)
    rows = BoxStore(path).rows() if path.is_file() else []
    inside, outside = _rows_under(rows, data_root, counts)
    sources = [proposal_source(r) for r in inside]
    volumes = {str(r["Volume"]) for r, s in zip(inside, sources, strict=True) if s is None}
    return TrainingSet(sources.count(None), sources.count("rule"), sources.count("model"), len(volumes),
                       outside, bool(include_proposals))


# ------------------------------------------------------------------------------------------ starting


def _spec_knows(key: str) -> bool:
    from core.models import get_spec

    return key in get_spec(FAMILY).defaults


LOOP_MIN_STEPS = 60  # optimizer steps a loop job takes at least (see loop_epochs)
LOOP_MAX_EPOCHS = 60


def loop_epochs(n_boxes: int, settings: Mapping[str, Any]) -> int:
    """Epochs for `n_boxes` training boxes: the preset's, or more so that training takes at least
    LOOP_MIN_STEPS optimizer steps (at most LOOP_MAX_EPOCHS); the batch size stays the preset's.

    A first patient gives a few dozen boxes: with the quick preset's batch of 16 that is one to
    three steps per epoch, and 5 epochs teach the network nothing. On LIDC-IDRI-0001 (mean IoU
    against the HU-rule boxes of the slices not trained on, lungs wider than 0.3 of the image;
    one run each, from scratch): 30 confirmed boxes, batch 16: 5 steps 0.68 (the constant mean
    box: 0.69), 25 steps 0.81, 60 steps 0.81; batch 8, 60 steps: 0.66. 60 boxes, batch 16: 30
    steps 0.63, 60 steps 0.71 (mean box 0.66)."""
    epochs = int(settings.get("max_epochs", 1))
    n_train = max(1, round(n_boxes * (1.0 - float(settings.get("val_fraction", 0.2)))))
    batch = max(1, int(settings.get("batch_size", 1)))
    steps_per_epoch = max(1, n_train // batch)
    return max(epochs, min(LOOP_MAX_EPOCHS, -(-LOOP_MIN_STEPS // steps_per_epoch)))


def loop_settings(preset: str = "quick", include_proposals: bool = False,
                  overrides: Mapping[str, Any] | None = None, n_boxes: int | None = None) -> dict[str, Any]:
    """The settings a loop job runs with: the preset, its epochs raised for few boxes
    (`loop_epochs`, when `n_boxes` is given), one best checkpoint kept, then `overrides`;
    `include_proposals` only where the family's spec has that setting."""
    from core.models import get_spec

    try:
        settings = get_spec(FAMILY).preset_settings(preset)
    except KeyError as exc:
        raise LoopError(str(exc.args[0])) from None
    if n_boxes is not None:
        settings["max_epochs"] = loop_epochs(n_boxes, settings)
    if "save_top_k" in settings:
        settings["save_top_k"] = 1  # proposals need the best checkpoint only (plus last.ckpt)
    settings.update(overrides or {})
    if _spec_knows("include_proposals"):
        settings["include_proposals"] = bool(include_proposals)
    return settings


def _write_snapshot(rows: list[Mapping], path: Path) -> None:
    """The rows as they are (annotator and time included), in the lung_bbox.csv format."""
    import csv
    import io

    from core.annotations import COLUMNS, COORDS, DECIMALS
    from core.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: (str(r["Volume"]), int(r["Slice"]))):
        writer.writerow([row["Image"], *(f"{float(row[c]):.{DECIMALS}f}" for c in COORDS), row["Volume"],
                         int(row["Slice"]), row["Annotator"], row["Updated"]])
    atomic_write_text(path, buffer.getvalue())


def start_training(data_root: Path | str, runs_root: Path | str, annotations_csv: Path | str, *,
                   preset: str = "quick", include_proposals: bool = False,
                   settings: Mapping[str, Any] | None = None, device: str = "auto") -> str:
    """Start a background job training the lung localizer on the data root's current annotations
    (a snapshot taken now) with `preset` (more epochs for few boxes: `loop_epochs`) and
    `settings` on top; returns the job id.

    Proposals are left out of the snapshot unless `include_proposals` (also passed on as the
    family's setting where the spec has it). Raises LoopError when
    no confirmed box of a CT volume under the data root exists, JobError for bad settings.
    """
    from core.jobs import check_settings, resolve_device, submit_command, train_command
    from core.models import get_spec
    from core.train_form import changed_settings

    data_root = Path(data_root).expanduser().resolve()
    if not data_root.is_dir():
        raise LoopError(f"{data_root}: the data root does not exist")
    found = training_set(annotations_csv, data_root, include_proposals)
    if found.confirmed == 0:
        where = "" if not found.outside else f" ({found.outside} box(es) belong to volumes not under it)"
        raise LoopError(
            f"{annotations_csv}: no confirmed lung box of a CT volume under {data_root}{where}; "
            "draw boxes or confirm proposals first (unconfirmed proposals are not trained on)")
    spec = get_spec(FAMILY)
    full = loop_settings(preset, include_proposals, settings, n_boxes=found.used)
    check_settings(FAMILY, full)
    resolved = resolve_device(device)
    if "device" in spec.defaults:
        full["device"] = resolved
    job_settings = changed_settings(spec.defaults, full)
    rows, _ = _rows_under(BoxStore(annotations_csv).rows(), data_root)
    if not include_proposals:  # left out here too, whether or not the trainer knows the setting
        rows = [r for r in rows if not is_proposal(r)]
    meta = {"family": FAMILY, "data": str(data_root), "settings": job_settings, "origin": LOOP_ORIGIN,
            "annotations_source": str(Path(annotations_csv).resolve()), "preset": preset,
            "boxes": {"confirmed": found.confirmed, "rule": found.rule, "model": found.model,
                      "used": found.used}}

    def command(run_dir: Path) -> list[str]:
        # submit_command calls this with the new job folder before it writes job.json: the
        # snapshot goes into the run folder and its path into the recorded settings (resume).
        snapshot = run_dir / SNAPSHOT_NAME
        _write_snapshot(rows, snapshot)
        job_settings["annotations_csv"] = str(snapshot)
        return train_command(FAMILY, data_root, run_dir, job_settings)

    job = submit_command(command, kind="train", device=resolved, runs_root=runs_root, meta=meta)
    return job.id


# ------------------------------------------------------------------------------------------ watching


def loop_status(runs_root: Path | str, job_id: str) -> dict[str, Any]:
    """Where a loop job stands, for the page to poll:

    {"job", "state" (SUBMITTED/QUEUED/RUNNING/DONE/ERROR/STOPPED), "final", "epoch" (the epoch in
     progress, from 1; None before the trainer's first report), "max_epochs",
     "fraction" (None before the first epoch report), "metric" (latest val_iou or None),
     "run" (the run folder once DONE with a checkpoint, else None), "error" (text, "" unless it
     failed), "text" (one line for the page)}.
    """
    from core import jobs, runs

    job = jobs.get(job_id, runs_root=runs_root)
    progress = jobs.progress(job_id, runs_root=runs_root)
    rows = runs.metrics(job.dir)
    metric = next((float(r["val_iou"]) for r in reversed(rows) if isinstance(r.get("val_iou"), int | float)),
                  None)
    epoch = progress.epoch if progress else None
    max_epochs = progress.max_epochs if progress else job.settings.get("max_epochs")
    run = lung_run(job.dir) if job.state == jobs.DONE else None
    error = ""
    if job.state in (jobs.ERROR, jobs.STOPPED):
        detail = jobs.last_error_line(job.log_path)
        parts = [job.reason] if job.reason else []
        if detail and detail not in job.reason:
            parts.append(detail)
        error = "; ".join(parts) or job.state.lower()
    if job.state == jobs.DONE and run is None:
        error = f"{job.dir}: the job finished without a usable checkpoint"
    waiting = {jobs.SUBMITTED: "Starting training…", jobs.QUEUED: "Waiting for another training job to end…"}
    text = waiting.get(job.state, "")
    if job.state == jobs.RUNNING:
        text = "Training" + (f": epoch {epoch or 1} of {max_epochs}" if max_epochs else "…")
        text += f" · val_iou {metric:.2f}" if metric is not None else ""
    elif job.state == jobs.DONE:
        text = (f"Trained: {run.label}" if run is not None else error)
    elif job.final:
        text = f"Training {job.state.lower()}: {error}"
    return {"job": job.id, "state": job.state, "final": job.final, "epoch": epoch, "max_epochs": max_epochs,
            "fraction": progress.fraction if progress else None, "metric": metric,
            "run": run.path if run is not None else None, "error": error, "text": text}


def loop_jobs(runs_root: Path | str) -> list:
    """Jobs started from the Annotate page (core.jobs.Job snapshots), newest first."""
    from core import jobs
    from core.runs import read_json_dict

    return [j for j in jobs.list_jobs(runs_root)
            if read_json_dict(j.dir / jobs.JOB_FILE).get("origin") == LOOP_ORIGIN]


def latest_loop_run(runs_root: Path | str) -> LungRun | None:
    """The newest finished run started from the Annotate page; None when there is none."""
    return next((r for r in lung_runs(runs_root) if r.origin == LOOP_ORIGIN), None)


# ------------------------------------------------------------------------------ the Annotate page

LOOP_SETTINGS_ENV = "SLICEWISE_LOOP_SETTINGS"  # settings on top of the quick preset for Train on these boxes


def loop_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings that "Train on these boxes" puts on top of the quick preset, from the environment
    variable SLICEWISE_LOOP_SETTINGS: comma-separated `key=value` pairs as the CLI's `--set` takes
    them (e.g. `image_size=64,prepare_size=64,max_epochs=3` for a slow machine or a test). Empty:
    none. Raises LoopError naming the variable for a malformed pair or an unknown setting."""
    import os

    from core.models import get_spec
    from core.train.config import SettingsError, apply_overrides

    text = str((os.environ if environ is None else environ).get(LOOP_SETTINGS_ENV) or "").strip()
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        return {}
    try:
        applied = apply_overrides(get_spec(FAMILY), items)
    except SettingsError as exc:
        raise LoopError(f"{LOOP_SETTINGS_ENV}: {exc}") from None
    return {key: applied[key] for key in (item.partition("=")[0].strip() for item in items)}


UNCERTAINTY_HELP = {
    "tta": "tta: how much the model's box moves when the slice is flipped or shifted a little "
           "(test-time augmentation); a model that follows the lungs barely moves. Four predictions "
           "of the slices the first time.",
    "rule": "rule: how far the model's box is from the HU rule's box (1 - IoU); cheap, but slices "
            "without lungs (where the rule finds none) come first.",
}


def shown_job(session_job: str | None, jobs: Iterable[Any]) -> str | None:
    """The loop job the page shows: the one started in this browser session, else (after a reload)
    the newest one started from Annotate (`loop_jobs`, newest first); None when there is none."""
    if session_job:
        return session_job
    return next((j.id for j in jobs), None)


def finished_now(previous_state: str | None, status: Mapping[str, Any]) -> bool:
    """Whether a job the page watched while it was live has just finished with a usable run: then
    the page offers its boxes (selects the run in "Proposals from", once). A job first seen already
    finished (a reload long after) is shown, not offered again."""
    from core import jobs

    live = previous_state is not None and previous_state not in jobs.FINAL_STATES
    return live and status.get("state") == jobs.DONE and status.get("run") is not None


def status_line(status: Mapping[str, Any]) -> str:
    """The page's one status line: the job's state word first ("RUNNING · Training: epoch 3 of 60")."""
    text = str(status.get("text") or "")
    return f"{status.get('state')} · {text}" if text else str(status.get("state"))
