"""Starting, cancelling and resuming jobs.

`submit` validates what it can before anything starts (family, data folder, settings against
their ranges), writes the job folder and starts the supervisor (`python -m core.jobs.supervisor
<job dir>`) as a new session, so that the job outlives Streamlit reruns, page changes and app
restarts. `cancel` ends the job's whole process group; `resume` refuses while any process of
the job is alive, so that two trainers never write one run folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from core import runs
from core.errors import JobError
from core.jobs import procs
from core.jobs.files import (
    DONE,
    ERROR,
    FINAL_STATES,
    JOB_FILE,
    LOG_FILE,
    STATUS_FILE,
    STOPPED,
    SUBMITTED,
    Job,
    get,
    iso,
    job_dir,
    load,
    read_json,
    reconcile,
    root_of,
    status_lock,
    write_json,
)
from core.settings import REPO_ROOT

CANCEL_GRACE_S = 5.0
EXIT_GRACE_S = 3.0  # how long resume waits for the processes of a final job to exit
SUPERVISOR_MODULE = "core.jobs.supervisor"


# ---------------------------------------------------------------- configuration


def slot_limit(slot: str) -> int:
    """How many jobs may hold a `slot` ("gpu" or "cpu") at once.

    `SLICEWISE_GPU_JOBS` (default 1) and `SLICEWISE_CPU_JOBS` (default 1: a CPU training
    uses every core, two at once only slow each other down); 0 means unlimited.
    """
    name, default = ("SLICEWISE_GPU_JOBS", "1") if slot == "gpu" else ("SLICEWISE_CPU_JOBS", "1")
    raw = os.environ.get(name, default)
    try:
        value = int(raw)
    except ValueError as exc:
        raise JobError(f"{name}={raw!r}: expected a whole number of parallel jobs") from exc
    if value < 0:
        raise JobError(f"{name}={raw!r}: expected 0 (unlimited) or more")
    return value


@lru_cache(maxsize=1)
def gpu_usable() -> bool:
    """core.device.cuda_available(), asked in a subprocess so that the app's process never imports
    torch. Without an NVIDIA device node there is nothing to ask (and no 3 s torch import)."""
    if not any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")):
        return False
    code = "import sys; from core.device import cuda_available; sys.stdout.write(str(int(cuda_available())))"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "1"


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when a GPU is usable, else "cpu"; "cuda"/"cuda:N"/"cpu" pass through."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if gpu_usable() else "cpu"
    if device == "cpu" or re.fullmatch(r"cuda(:\d+)?", device):
        return device
    raise JobError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def device_options() -> list[str]:
    """Devices a job can use here: the GPU first when there is one."""
    return ["cuda", "cpu"] if gpu_usable() else ["cpu"]


# ---------------------------------------------------------------- submitting


def new_job_id() -> str:
    """Sortable by creation time (UTC, to the millisecond) plus a short random suffix."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{int(now % 1 * 1000):03d}-{secrets.token_hex(2)}"


def format_setting(value: Any) -> str:
    """A settings value as the trainer's `--set key=value` expects it (JSON for non-strings)."""
    return value if isinstance(value, str) else json.dumps(value)


def train_command(family: str, data: Path | str, out: Path, settings: dict[str, Any]) -> list[str]:
    """The exact foreground command a training job runs (SPEC section 9)."""
    cmd = [sys.executable, "-m", "core", "train", "--family", family, "--data", str(data), "--out", str(out)]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={format_setting(value)}"]
    return cmd


def check_settings(family: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The family's spec checks `settings` (known keys, types, choices, ranges) before a job starts;
    a JobError says what is wrong. Returns the family's defaults."""
    from core.models import get_spec  # the registry never imports torch
    from core.train.config import SettingsError, validate_settings

    try:
        spec = get_spec(family)
    except KeyError as exc:
        raise JobError(str(exc.args[0]) if exc.args else f"unknown model family {family!r}") from None
    try:
        validate_settings(spec, settings)
    except SettingsError as exc:
        raise JobError(f"{family}: {exc}") from None
    return dict(spec.defaults)


def submit(
    family: str,
    data: Path | str,
    settings: dict[str, Any] | None = None,
    device: str = "auto",
    runs_root: Path | str | None = None,
) -> Job:
    """Start `python -m core train` for `family` on `data` as a background job; return its snapshot."""
    if not family:
        raise JobError("no model family given")
    settings = dict(settings or {})
    defaults = check_settings(family, settings)
    data_path = Path(data).expanduser()
    if not data_path.exists():
        raise JobError(f"{data_path}: the training data does not exist")
    resolved = resolve_device(device)
    if "device" in defaults:
        settings["device"] = resolved  # the trainer picks its device from this setting
    return submit_command(
        lambda run_dir: train_command(family, data_path.resolve(), run_dir, settings),
        kind="train", device=resolved, runs_root=runs_root,
        meta={"family": family, "data": str(data_path.resolve()), "settings": settings},
    )


def submit_command(
    command,
    *,
    kind: str = "command",
    device: str = "cpu",
    runs_root: Path | str | None = None,
    meta: dict[str, Any] | None = None,
) -> Job:
    """Run any command as a job. `command` is an argv list or a callable run_dir -> argv.

    The slot is "gpu" for a CUDA device, else "cpu"; at most `slot_limit(slot)` jobs hold
    it at once (recorded at submit time), the others wait QUEUED in submission order.
    """
    root = root_of(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    job_id = new_job_id()
    path = root / job_id
    path.mkdir()
    argv = [str(a) for a in (command(path) if callable(command) else command)]
    slot = "gpu" if device.startswith("cuda") else "cpu"
    now = time.time()
    description = {
        "id": job_id, "kind": kind, "family": None, "data": None, "settings": {}, **(meta or {}),
        "device": device, "slot": slot, "slots": slot_limit(slot), "command": argv,
        "created": iso(now), "created_ts": now,
    }
    write_json(path / JOB_FILE, description)
    write_json(path / STATUS_FILE, {"state": SUBMITTED, "reason": "", "submitted_at": now,
                                    "attempt": 1, "command": argv, "updated": now})
    spawn_supervisor(path)
    return get(job_id, runs_root=root)


def spawn_supervisor(path: Path) -> None:
    """Start the supervisor detached: a new session (its own process group), the log as its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(path / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR_MODULE, str(path)],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    with status_lock(path):
        status = read_json(path / STATUS_FILE)
        if status.get("pid") is None:
            status.update(pid=proc.pid, pgid=proc.pid, pid_start=procs.start_time(proc.pid),
                          updated=time.time())
            write_json(path / STATUS_FILE, status)


# ---------------------------------------------------------------- cancel / resume


def cancel(job_id: str, runs_root: Path | str | None = None, grace_s: float = CANCEL_GRACE_S) -> Job:
    """Stop the job's whole process tree: SIGTERM to its process group, SIGKILL after `grace_s`.

    A job already final is refused, unless processes of it are somehow still alive: those are ended.
    """
    path = job_dir(job_id, runs_root)
    reconcile(path)
    with status_lock(path):
        status = read_json(path / STATUS_FILE)
        if status.get("state") in FINAL_STATES:
            # a supervisor that has just recorded the final state exits by itself; anything else is ended
            if not procs.wait_gone(status, EXIT_GRACE_S):
                procs.end_job_processes(status, grace_s)
                return load(path)
            raise JobError(f"job {job_id} is already {status['state']}; nothing to cancel")
        status.update(cancel_requested=True, updated=time.time())
        write_json(path / STATUS_FILE, status)
    procs.end_job_processes(status, grace_s)
    with status_lock(path):
        status = read_json(path / STATUS_FILE)
        if status.get("state") not in FINAL_STATES:
            status.update(state=STOPPED, reason="cancelled", ended_at=time.time(), updated=time.time())
            write_json(path / STATUS_FILE, status)
    return load(path)


def resumable(job: Job) -> bool:
    """Whether resuming can help: a stopped or failed training job with a last checkpoint whose
    failure was not its data or settings (those fail again the same way)."""
    from core.jobs.files import is_data_error

    return (job.kind == "train" and bool(job.family) and job.state in (STOPPED, ERROR)
            and not is_data_error(job) and runs.last_checkpoint(job.dir) is not None)


def resume(job_id: str, settings: dict[str, Any] | None = None,
           runs_root: Path | str | None = None) -> Job:
    """Start a stopped or failed training job again with `--resume` in the same run folder.

    `settings` overrides some of the job's settings for the rest of the run (e.g. a larger
    `max_epochs` to continue a finished job). Refused while any process of the job is alive.
    """
    path = job_dir(job_id, runs_root)
    reconcile(path)
    with status_lock(path):  # one resume at a time: never two trainers in one run folder
        job = load(path)
        _check_resumable(job, settings)
        # a supervisor that has just recorded the final state may still be exiting: give it a moment
        alive = [] if procs.wait_gone(job.status, EXIT_GRACE_S) else procs.job_processes(job.status)
        if alive:
            raise JobError(f"job {job_id} still has running processes {alive}; cancel it before resuming")
        desc = read_json(path / JOB_FILE)
        merged = {**desc.get("settings", {}), **(settings or {})}
        if settings:
            check_settings(job.family, merged)
        command = train_command(job.family, desc["data"], path, merged) + ["--resume"]
        now = time.time()
        with open(path / LOG_FILE, "a") as log:
            log.write(f"\n[slicewise] resumed at {iso(now)} (attempt {job.attempt + 1})\n")
        desc["settings"] = merged
        write_json(path / JOB_FILE, desc)
        write_json(path / STATUS_FILE, {"state": SUBMITTED, "reason": "", "submitted_at": now,
                                        "attempt": job.attempt + 1, "command": command, "updated": now})
    spawn_supervisor(path)
    return load(path)


def _check_resumable(job: Job, settings: dict[str, Any] | None) -> None:
    if not job.final:
        raise JobError(f"job {job.id} is {job.state}; cancel it or wait before resuming")
    if job.kind != "train" or not job.family:
        raise JobError(f"job {job.id} is a {job.kind} job; only training jobs resume")
    if job.state == DONE and not settings:
        raise JobError(f"job {job.id} finished; give a larger max_epochs to train further")
    if runs.last_checkpoint(job.dir) is None:
        raise JobError(f"{job.dir / runs.CHECKPOINT_DIR}: no checkpoint to resume from; "
                       "start a new job instead")
    if job.state == ERROR and job.exit_code == 2 and not settings:
        raise JobError(f"job {job.id} failed on its data or settings ({job.reason}); "
                       "resuming would fail the same way")
