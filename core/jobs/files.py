"""A job's files and states: `job.json` (what was asked), `status.json` (where it stands), `job.log`.

States: SUBMITTED -> QUEUED -> RUNNING -> DONE / ERROR / STOPPED. Reading a job checks that a
job with a live state still has its supervisor; one that lost it has its remaining processes
ended and is marked ERROR ("process vanished"). The run folder itself (metrics, progress,
checkpoints) is read through core.runs, the one reader of a run folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import runs
from core.errors import JobError
from core.jobs import procs
from core.settings import runs_root as default_runs_root

SUBMITTED, QUEUED, RUNNING = "SUBMITTED", "QUEUED", "RUNNING"
DONE, ERROR, STOPPED = "DONE", "ERROR", "STOPPED"
FINAL_STATES = frozenset({DONE, ERROR, STOPPED})
JOB_FILE, STATUS_FILE, LOG_FILE = "job.json", "status.json", "job.log"
STARTUP_GRACE_S = 60.0  # a job with no recorded pid yet is "starting", not vanished, for this long


@dataclass(frozen=True)
class Job:
    """A snapshot of one job: what was asked (job.json) and where it stands (status.json)."""

    id: str
    dir: Path
    kind: str
    family: str | None
    data: str | None
    settings: dict[str, Any]
    device: str
    slot: str
    command: list[str]
    created: float
    state: str
    reason: str = ""
    pid: int | None = None
    child_pid: int | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    attempt: int = 1
    status: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE


@dataclass(frozen=True)
class Progress:
    """Where a training run is, from the trainer's `progress.json`."""

    epoch: int
    max_epochs: int | None
    step: int | None
    steps_per_epoch: int | None
    elapsed_s: float | None
    eta_s: float | None
    updated: Any

    @property
    def fraction(self) -> float | None:
        """Done fraction in [0, 1], counting steps inside the epoch when known."""
        if not self.max_epochs:
            return None
        within = 0.0
        if self.step is not None and self.steps_per_epoch:
            within = min(1.0, (self.step % self.steps_per_epoch) / self.steps_per_epoch)
        return max(0.0, min(1.0, (self.epoch + within) / self.max_epochs))


# ---------------------------------------------------------------- reading jobs


def root_of(runs_root: Path | str | None) -> Path:
    return Path(runs_root) if runs_root is not None else default_runs_root()


def job_dir(job_id: str, runs_root: Path | str | None = None) -> Path:
    """The folder of `job_id`; JobError when there is no such job."""
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise JobError(f"{job_id!r}: not a job id")
    path = root_of(runs_root) / job_id
    if not (path / JOB_FILE).is_file():
        raise JobError(f"{path}: no such job (no {JOB_FILE})")
    return path


def get(job_id: str, runs_root: Path | str | None = None) -> Job:
    """The current snapshot of one job, after checking that a running job's process is alive."""
    path = job_dir(job_id, runs_root)
    reconcile(path)
    return load(path)


def list_jobs(runs_root: Path | str | None = None) -> list[Job]:
    """Every job under the runs folder, newest first. Dead processes with a live state become ERROR."""
    root = root_of(runs_root)
    if not root.is_dir():
        return []
    jobs = []
    for path in sorted(root.iterdir(), reverse=True):
        if path.name.startswith(".") or not (path / JOB_FILE).is_file():
            continue
        try:
            reconcile(path)
            jobs.append(load(path))
        except (OSError, ValueError):
            continue  # a folder being created or deleted right now
    return jobs


def load(path: Path) -> Job:
    desc = read_json(path / JOB_FILE)
    status = read_json(path / STATUS_FILE) if (path / STATUS_FILE).exists() else {"state": SUBMITTED}
    return Job(
        id=desc["id"], dir=path, kind=desc.get("kind", "command"), family=desc.get("family"),
        data=desc.get("data"), settings=desc.get("settings") or {}, device=desc.get("device", "cpu"),
        slot=desc.get("slot", "cpu"), command=status.get("command") or desc.get("command", []),
        created=desc.get("created_ts", 0.0), state=status.get("state", SUBMITTED),
        reason=status.get("reason", ""), pid=status.get("pid"), child_pid=status.get("child_pid"),
        started=status.get("started_at"), ended=status.get("ended_at"), exit_code=status.get("exit_code"),
        attempt=status.get("attempt", 1), status=status,
    )


def reconcile(path: Path) -> None:
    """A job whose supervisor is gone but whose state is not final gets an honest final state, after
    whatever is left of it (a trainer, loader workers) has been ended: never a live orphan."""
    status = read_json(path / STATUS_FILE)
    if status.get("state") in FINAL_STATES or supervisor_alive(status):
        return
    with status_lock(path):
        status = read_json(path / STATUS_FILE)  # the supervisor may have just written it
        if status.get("state") in FINAL_STATES or supervisor_alive(status):
            return
        left = procs.job_processes(status)
        procs.end_job_processes(status)
        if status.get("cancel_requested"):
            status.update(state=STOPPED, reason="cancelled")
        else:
            detail = last_error_line(path / LOG_FILE)
            ended = f"; ended {len(left)} leftover process(es)" if left else ""
            status.update(state=ERROR,
                          reason="process vanished" + (f" ({detail})" if detail else "") + ended)
        status.update(ended_at=time.time(), updated=time.time())
        write_json(path / STATUS_FILE, status)


def supervisor_alive(status: dict[str, Any]) -> bool:
    pid = status.get("pid")
    if pid is None:  # spawned a moment ago, pid not written yet
        return time.time() - status.get("submitted_at", 0) < STARTUP_GRACE_S
    return procs.pid_alive(pid, status.get("pid_start"))


def tail_log(job_id: str, n: int = 50, runs_root: Path | str | None = None) -> str:
    """The last `n` lines of the job's log (progress bars' carriage returns folded)."""
    path = job_dir(job_id, runs_root) / LOG_FILE
    return "\n".join(tail_lines(path, n))


# ---------------------------------------------------------------- the run folder (through core.runs)


def metrics(job_id: str, runs_root: Path | str | None = None) -> list[dict[str, Any]]:
    """The trainer's `metrics.jsonl`, one dict per epoch; a half-written last line is skipped."""
    return runs.metrics(job_dir(job_id, runs_root))


def progress(job_id: str, runs_root: Path | str | None = None) -> Progress | None:
    """Epoch k of n, steps, elapsed and ETA from `progress.json`; None before the first write."""
    raw = runs.progress(job_dir(job_id, runs_root))
    if not raw:
        return None
    epoch, max_epochs = _int(raw.get("epoch")) or 0, _int(raw.get("max_epochs"))
    step, per_epoch = _int(raw.get("step")), _int(raw.get("steps_per_epoch"))
    elapsed, eta = _float(raw.get("elapsed_s")), _float(raw.get("eta_s"))
    if eta is None and elapsed and max_epochs and step and per_epoch:
        done = step / (per_epoch * max_epochs)
        eta = elapsed * (1 - done) / done if 0 < done < 1 else None
    return Progress(epoch, max_epochs, step, per_epoch, elapsed, eta, raw.get("updated"))


def best_checkpoint(job_id: str, runs_root: Path | str | None = None) -> Path | None:
    """The best checkpoint: `result.json`'s when the run finished, else the newest in checkpoints/."""
    return runs.best_checkpoint(job_dir(job_id, runs_root))


def list_checkpoints(runs_root: Path | str | None = None) -> list[Path]:
    """Checkpoints to predict with: finished jobs' best first (newest job first), then the best of
    the other finished runs (a `python -m core train` run folder with result.json, newest first), then
    any other .ckpt/.pt/.pth file under the runs folder."""
    root = root_of(runs_root)
    if not root.is_dir():
        return []
    ordered: list[Path] = []
    for job in list_jobs(root):
        best = runs.best_checkpoint(job.dir) if job.state == DONE else None
        if best is not None:
            ordered.append(best)
    finished = [p for p in root.iterdir() if p.is_dir() and (p / "result.json").is_file()]
    for run in sorted(finished, key=lambda p: (p / "result.json").stat().st_mtime, reverse=True):
        best = runs.best_checkpoint(run)
        if best is not None and best not in ordered:
            ordered.append(best)
    others = sorted(runs.checkpoint_files(root), key=lambda p: p.stat().st_mtime, reverse=True)
    seen = set(ordered)
    return ordered + [p for p in others if p not in seen]


# ---------------------------------------------------------------- outcome from the log


_ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Interrupt)|error|Killed)\b:?\s*(.*)$")


def last_error_line(log: Path) -> str:
    """The most telling error line of a log: `error: ...` from the CLI, else a traceback's last line."""
    lines = tail_lines(log, 200)
    for line in reversed(lines):
        if re.search(r"out of memory|OutOfMemoryError", line, re.IGNORECASE):
            return "out of memory: " + line.strip()[:300]
    for line in reversed(lines):
        stripped = line.strip()
        if stripped.startswith("error:"):
            return stripped[len("error:"):].strip()[:500]
    for line in reversed(lines):
        stripped = line.strip()
        if _ERROR_LINE.match(stripped) and not stripped.startswith("[slicewise]"):
            return stripped[:500]
    return ""


def final_state(returncode: int, cancelled: bool, log: Path) -> tuple[str, str]:
    """(state, reason) for a command that ended with `returncode` (negative: killed by a signal)."""
    if cancelled:
        return STOPPED, "cancelled"
    if returncode == 0:
        return DONE, ""
    detail = last_error_line(log)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of memory?)" if returncode == -signal.SIGKILL and not detail else ""
        return ERROR, detail or f"killed by {name}{hint}"
    return ERROR, detail or f"exited with code {returncode}"


def is_data_error(job: Job) -> bool:
    """Whether a failed job failed on its data or settings (the CLI's exit code 2, `error: ...`):
    running it again from its last checkpoint cannot help."""
    return job.state == ERROR and job.exit_code == 2


# ---------------------------------------------------------------- small file helpers


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def status_lock(path: Path):
    from filelock import FileLock

    return FileLock(str(path / "status.lock"), timeout=30, is_singleton=False)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write-then-rename (core.atomic), so that a reader never sees half a file."""
    from core.atomic import atomic_write_json

    atomic_write_json(path, value, indent=1)


def tail_lines(path: Path, n: int, max_bytes: int = 256_000) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            raw = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in raw.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines[-n:] if n > 0 else []


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
