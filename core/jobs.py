"""Background jobs: training (and any other command) in a detached subprocess under `runs/<id>/`.

The pattern follows MONAI Label's async tasks: a job is a folder with its description
(`job.json`), its state (`status.json`: SUBMITTED -> QUEUED -> RUNNING -> DONE / ERROR /
STOPPED) and its log (`job.log`). `submit` starts a small supervisor, `python -m core.jobs
run <job dir>`, as a new session (its own process group), so it outlives Streamlit reruns,
page changes, browser reloads and even an app restart. The supervisor waits for a slot
(a file lock per slot: one GPU job at a time by default), runs the real command as its
child, and records the exit code or signal as the final state with a readable reason.
If the supervisor itself dies, `list_jobs`/`get` notice the dead pid and say so.

No threads and no Streamlit here: pages poll these files.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import JobError
from core.settings import REPO_ROOT
from core.settings import runs_root as default_runs_root

SUBMITTED, QUEUED, RUNNING = "SUBMITTED", "QUEUED", "RUNNING"
DONE, ERROR, STOPPED = "DONE", "ERROR", "STOPPED"
FINAL_STATES = frozenset({DONE, ERROR, STOPPED})
JOB_FILE, STATUS_FILE, LOG_FILE = "job.json", "status.json", "job.log"
CANCEL_GRACE_S = 5.0
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
def cuda_available() -> bool:
    """Whether torch sees a CUDA device, asked in a subprocess so that callers never import torch.

    Without an NVIDIA device node there is nothing to ask (and no 3 s torch import).
    """
    if not any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")):
        return False
    code = "import torch, sys; sys.stdout.write(str(int(torch.cuda.is_available())))"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "1"


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when a GPU is usable, else "cpu"; "cuda"/"cuda:N"/"cpu" pass through."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cpu" or re.fullmatch(r"cuda(:\d+)?", device):
        return device
    raise JobError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


# ---------------------------------------------------------------- submitting


def _root(runs_root: Path | str | None) -> Path:
    return Path(runs_root) if runs_root is not None else default_runs_root()


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
    data_path = Path(data).expanduser()
    if not data_path.exists():
        raise JobError(f"{data_path}: the training data does not exist")
    resolved = resolve_device(device)
    settings = dict(settings or {})
    if "device" in _family_defaults(family):
        settings["device"] = resolved  # the trainer picks its device from this setting
    return submit_command(
        lambda run_dir: train_command(family, data_path.resolve(), run_dir, settings),
        kind="train", device=resolved, runs_root=runs_root,
        meta={"family": family, "data": str(data_path.resolve()), "settings": settings},
    )


def _family_defaults(family: str) -> dict[str, Any]:
    from core.models import get_spec  # the registry never imports torch

    try:
        return dict(get_spec(family).defaults)
    except KeyError as exc:
        raise JobError(str(exc.args[0]) if exc.args else f"unknown model family {family!r}") from None


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
    root = _root(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    job_id = new_job_id()
    job_dir = root / job_id
    job_dir.mkdir()
    argv = [str(a) for a in (command(job_dir) if callable(command) else command)]
    slot = "gpu" if device.startswith("cuda") else "cpu"
    now = time.time()
    description = {
        "id": job_id, "kind": kind, "family": None, "data": None, "settings": {}, **(meta or {}),
        "device": device, "slot": slot, "slots": slot_limit(slot), "command": argv,
        "created": _iso(now), "created_ts": now,
    }
    _write_json(job_dir / JOB_FILE, description)
    _write_json(job_dir / STATUS_FILE, {"state": SUBMITTED, "reason": "", "submitted_at": now,
                                        "attempt": 1, "command": argv, "updated": now})
    _spawn_supervisor(job_dir)
    return get(job_id, runs_root=root)


def _spawn_supervisor(job_dir: Path) -> None:
    """Start `python -m core.jobs run <job_dir>` detached: new session, log as stdout/stderr."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(job_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.jobs", "run", str(job_dir)],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    with _status_lock(job_dir):
        status = _read_json(job_dir / STATUS_FILE)
        if status.get("pid") is None:
            status.update(pid=proc.pid, pgid=proc.pid, pid_start=_start_time(proc.pid), updated=time.time())
            _write_json(job_dir / STATUS_FILE, status)


# ---------------------------------------------------------------- reading


def job_dir(job_id: str, runs_root: Path | str | None = None) -> Path:
    """The folder of `job_id`; JobError when there is no such job."""
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise JobError(f"{job_id!r}: not a job id")
    path = _root(runs_root) / job_id
    if not (path / JOB_FILE).is_file():
        raise JobError(f"{path}: no such job (no {JOB_FILE})")
    return path


def get(job_id: str, runs_root: Path | str | None = None) -> Job:
    """The current snapshot of one job, after checking that a running job's process is alive."""
    path = job_dir(job_id, runs_root)
    _reconcile(path)
    return _load(path)


def list_jobs(runs_root: Path | str | None = None) -> list[Job]:
    """Every job under the runs folder, newest first. Dead processes with a live state become ERROR."""
    root = _root(runs_root)
    if not root.is_dir():
        return []
    jobs = []
    for path in sorted(root.iterdir(), reverse=True):
        if path.name.startswith(".") or not (path / JOB_FILE).is_file():
            continue
        try:
            _reconcile(path)
            jobs.append(_load(path))
        except (OSError, ValueError):
            continue  # a folder being created or deleted right now
    return jobs


def _load(path: Path) -> Job:
    desc = _read_json(path / JOB_FILE)
    status = _read_json(path / STATUS_FILE) if (path / STATUS_FILE).exists() else {"state": SUBMITTED}
    return Job(
        id=desc["id"], dir=path, kind=desc.get("kind", "command"), family=desc.get("family"),
        data=desc.get("data"), settings=desc.get("settings") or {}, device=desc.get("device", "cpu"),
        slot=desc.get("slot", "cpu"), command=status.get("command") or desc.get("command", []),
        created=desc.get("created_ts", 0.0), state=status.get("state", SUBMITTED),
        reason=status.get("reason", ""), pid=status.get("pid"), child_pid=status.get("child_pid"),
        started=status.get("started_at"), ended=status.get("ended_at"), exit_code=status.get("exit_code"),
        attempt=status.get("attempt", 1), status=status,
    )


def _reconcile(path: Path) -> None:
    """A job whose supervisor is gone but whose state is not final gets an honest final state."""
    status = _read_json(path / STATUS_FILE)
    if status.get("state") in FINAL_STATES or _supervisor_alive(status):
        return
    with _status_lock(path):
        status = _read_json(path / STATUS_FILE)  # the supervisor may have just written it
        if status.get("state") in FINAL_STATES or _supervisor_alive(status):
            return
        if status.get("cancel_requested"):
            status.update(state=STOPPED, reason="cancelled")
        else:
            detail = last_error_line(path / LOG_FILE)
            status.update(state=ERROR, reason="process vanished" + (f" ({detail})" if detail else ""))
        status.update(ended_at=time.time(), updated=time.time())
        _write_json(path / STATUS_FILE, status)


def _supervisor_alive(status: dict[str, Any]) -> bool:
    pid = status.get("pid")
    if pid is None:  # spawned a moment ago, pid not written yet
        return time.time() - status.get("submitted_at", 0) < STARTUP_GRACE_S
    return pid_alive(pid, status.get("pid_start"))


def tail_log(job_id: str, n: int = 50, runs_root: Path | str | None = None) -> str:
    """The last `n` lines of the job's log (progress bars' carriage returns folded)."""
    path = job_dir(job_id, runs_root) / LOG_FILE
    return "\n".join(_tail_lines(path, n))


def metrics(job_id: str, runs_root: Path | str | None = None) -> list[dict[str, Any]]:
    """The trainer's `metrics.jsonl`, one dict per epoch; a half-written last line is skipped."""
    from core.runs import metrics as run_metrics

    return run_metrics(job_dir(job_id, runs_root))


def progress(job_id: str, runs_root: Path | str | None = None) -> Progress | None:
    """Epoch k of n, steps, elapsed and ETA from `progress.json`; None before the first write."""
    path = job_dir(job_id, runs_root) / "progress.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
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
    path = job_dir(job_id, runs_root)
    return _best_checkpoint_in(path)


def _best_checkpoint_in(run: Path) -> Path | None:
    from core.runs import best_checkpoint as run_best

    return run_best(run)


def _checkpoint_files(folder: Path) -> list[Path]:
    from core.runs import checkpoint_files

    return checkpoint_files(folder)


def list_checkpoints(runs_root: Path | str | None = None) -> list[Path]:
    """Checkpoints to predict with: finished jobs' best first (newest job first), then any other
    .ckpt/.pt/.pth file under the runs folder."""
    root = _root(runs_root)
    if not root.is_dir():
        return []
    ordered: list[Path] = []
    for job in list_jobs(root):
        best = _best_checkpoint_in(job.dir) if job.state == DONE else None
        if best is not None:
            ordered.append(best)
    others = sorted((p for p in root.rglob("*") if p.suffix in (".ckpt", ".pt", ".pth") and p.is_file()),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    seen = set(ordered)
    return ordered + [p for p in others if p not in seen]


# ---------------------------------------------------------------- cancel / resume


def cancel(job_id: str, runs_root: Path | str | None = None, grace_s: float = CANCEL_GRACE_S) -> Job:
    """Stop the job's whole process tree: SIGTERM to its process group, SIGKILL after `grace_s`."""
    path = job_dir(job_id, runs_root)
    _reconcile(path)
    with _status_lock(path):
        status = _read_json(path / STATUS_FILE)
        if status.get("state") in FINAL_STATES:
            raise JobError(f"job {job_id} is already {status['state']}; nothing to cancel")
        status.update(cancel_requested=True, updated=time.time())
        _write_json(path / STATUS_FILE, status)
    pgid = _owned_pgid(status)
    if pgid is not None:
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_group_gone(pgid, status, grace_s):
            _signal_group(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, status, 5.0)
    with _status_lock(path):
        status = _read_json(path / STATUS_FILE)
        if status.get("state") not in FINAL_STATES:
            status.update(state=STOPPED, reason="cancelled", ended_at=time.time(), updated=time.time())
            _write_json(path / STATUS_FILE, status)
    return _load(path)


def resume(job_id: str, settings: dict[str, Any] | None = None,
           runs_root: Path | str | None = None) -> Job:
    """Start a stopped or failed training job again with `--resume` in the same run folder.

    `settings` overrides some of the job's settings for the rest of the run (e.g. a larger
    `max_epochs` to continue a finished job).
    """
    path = job_dir(job_id, runs_root)
    job = get(job_id, runs_root)
    if not job.final:
        raise JobError(f"job {job_id} is {job.state}; cancel it or wait before resuming")
    if job.kind != "train" or not job.family:
        raise JobError(f"job {job_id} is a {job.kind} job; only training jobs resume")
    if job.state == DONE and not settings:
        raise JobError(f"job {job_id} finished; give a larger max_epochs to train further")
    if not _checkpoint_files(path / "checkpoints"):
        raise JobError(f"{path / 'checkpoints'}: no checkpoint to resume from; start a new job instead")
    desc = _read_json(path / JOB_FILE)
    merged = {**desc.get("settings", {}), **(settings or {})}
    command = train_command(job.family, desc["data"], path, merged) + ["--resume"]
    now = time.time()
    with open(path / LOG_FILE, "a") as log:
        log.write(f"\n[slicewise] resumed at {_iso(now)} (attempt {job.attempt + 1})\n")
    with _status_lock(path):
        desc["settings"] = merged
        _write_json(path / JOB_FILE, desc)
        _write_json(path / STATUS_FILE, {"state": SUBMITTED, "reason": "", "submitted_at": now,
                                         "attempt": job.attempt + 1, "command": command, "updated": now})
    _spawn_supervisor(path)
    return _load(path)


def _owned_pgid(status: dict[str, Any]) -> int | None:
    """The job's process group, only while one of the job's own processes still holds it."""
    pgid = status.get("pgid")
    if pgid is None:
        return None
    mine = [("pid", "pid_start"), ("child_pid", "child_start")]
    if any(status.get(p) and pid_alive(status[p], status.get(s)) for p, s in mine) or group_members(pgid):
        return pgid
    return None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, status: dict[str, Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(status.get("pid"))
        if not group_members(pgid):
            return True
        time.sleep(0.05)
    return not group_members(pgid)


# ---------------------------------------------------------------- for the Train page


@dataclass(frozen=True)
class SettingField:
    """One field of the training form, derived from a family's default value and its choices."""

    key: str
    kind: str  # "checkbox", "int", "float", "text" or "choice"
    default: Any
    options: tuple = ()
    help: str = ""
    step: float | int | None = None
    format: str | None = None


def setting_fields(spec: Any, skip: tuple[str, ...] = ("device",), preset: str | None = None
                   ) -> list[SettingField]:
    """The form for a ModelSpec: one field per default, typed by the default's value, so that a
    new family needs no page change. `device` is skipped: the page offers it on its own.
    With `preset`, the fields start at that preset's values instead of the defaults."""
    fields = []
    start = spec.preset_settings(preset) if preset else spec.defaults
    for key, default in start.items():
        if key in skip:
            continue
        options, helptext = tuple(spec.choices.get(key, ())), spec.help.get(key, "")
        if options:
            fields.append(SettingField(key, "choice", default, options, helptext))
        elif isinstance(default, bool):
            fields.append(SettingField(key, "checkbox", default, help=helptext))
        elif isinstance(default, int):
            fields.append(SettingField(key, "int", default, help=helptext, step=1, format="%d"))
        elif isinstance(default, float):
            fields.append(SettingField(key, "float", default, help=helptext, step=_float_step(default),
                                       format="%g"))
        else:
            fields.append(SettingField(key, "text", str(default), help=helptext))
    return fields


def default_preset(spec: Any, devices: list[str]) -> str:
    """The preset the Train page opens with: the reference settings where a GPU can run them,
    else a quick CPU preset when the family has one (the reference takes days on a CPU)."""
    names = spec.preset_names()
    if "cuda" in devices:
        return names[0]
    from core.models import QUICK_PRESET

    return QUICK_PRESET if QUICK_PRESET in names else names[0]


def _float_step(value: float) -> float:
    """A step one decade below the value (lr 1e-4 -> 1e-5, 0.2 -> 0.01); 0.01 for zero."""
    if value == 0:
        return 0.01
    return 10.0 ** (math.floor(math.log10(abs(value))) - 1)


def changed_settings(defaults: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The form values that differ from the defaults (what goes on the command line as --set),
    converted back to the default's type (a float field may come back as an int)."""
    changed = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(default, float) and not isinstance(value, bool):
            value = float(value)
            if math.isclose(value, default, rel_tol=1e-9, abs_tol=1e-15):
                continue
        elif isinstance(default, int) and not isinstance(default, bool):
            value = int(value)
        if value != default:
            changed[key] = value
    return changed


@dataclass(frozen=True)
class DatasetChoice:
    path: Path
    label: str


def candidate_datasets(family: str, root: Path | str, max_depth: int = 3,
                       max_folders: int = 2000) -> list[DatasetChoice]:
    """Folders under the data root that look like training data for `family`, best guess first.

    The rule is the family's `ModelSpec.dataset_rule`; families without one get the root and
    its sub-folders. A box family also trains from the data root itself (the trainer prepares
    the annotated slices first), so the root is offered last for it.
    """
    from core.models import get_spec

    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    try:
        spec = get_spec(family)
    except KeyError:
        spec = None
    rule = spec.dataset_rule if spec is not None else None
    found: list[DatasetChoice] = []
    seen = 0
    for folder, depth in _walk_folders(root, max_depth):
        seen += 1
        if seen > max_folders:
            break
        try:
            names = {entry.name for entry in os.scandir(folder)}
        except OSError:
            continue
        if rule is None and depth <= 1 or rule is not None and _safe_rule(rule, folder, names):
            found.append(DatasetChoice(folder, _relative_label(folder, root)))
    if spec is not None and spec.review == "boxes" and not any(c.path == root for c in found):
        found.append(DatasetChoice(root, "data root (its annotated slices)"))
    return found


def _safe_rule(rule, folder: Path, names: set[str]) -> bool:
    try:
        return bool(rule(folder, names))
    except OSError:
        return False


def _walk_folders(root: Path, max_depth: int):
    """Breadth-first folders under root (root first), skipping hidden ones and DICOM-heavy leaves."""
    queue = [(root, 0)]
    while queue:
        folder, depth = queue.pop(0)
        yield folder, depth
        if depth >= max_depth:
            continue
        try:
            subs = sorted(e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            continue
        queue.extend((Path(p), depth + 1) for p in subs)


def _relative_label(folder: Path, root: Path) -> str:
    return "." if folder == root else str(folder.relative_to(root))


def device_options() -> list[str]:
    """Devices a job can use here: the GPU first when there is one."""
    return ["cuda", "cpu"] if cuda_available() else ["cpu"]


def format_duration(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 2 h 04 min; an en dash for unknown."""
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def job_row(job: Job) -> dict[str, Any]:
    """One line of the jobs table: id, family, state, epoch k/n, ETA, elapsed, best metric, reason."""
    prog = progress(job.id, job.dir.parent)
    epoch = f"{prog.epoch}/{prog.max_epochs}" if prog and prog.max_epochs else "–"
    running = job.state == RUNNING
    elapsed = (job.ended or time.time()) - job.started if job.started else None
    return {
        "job": job.id, "family": job.family or job.kind, "state": job.state, "epoch": epoch,
        "ETA": format_duration(prog.eta_s) if running and prog else "–",
        "elapsed": format_duration(elapsed), "best": best_metric_text(job), "data": _short(job.data),
        "reason": job.reason,
    }


def best_metric(job: Job) -> tuple[str, float, bool] | None:
    """(name, value, final): result.json's best metric, else the lowest val_loss so far."""
    try:
        result = json.loads((job.dir / "result.json").read_text())
        (name, value), = result["best_metric"].items()
        if isinstance(value, int | float):
            return name, float(value), True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    rows = metrics(job.id, job.dir.parent)
    losses = [r["val_loss"] for r in rows if isinstance(r.get("val_loss"), int | float)]
    return ("val_loss", float(min(losses)), False) if losses else None


def best_metric_text(job: Job) -> str:
    """`val_loss 0.0412`, with "(so far)" while the run has no result."""
    best = best_metric(job)
    if best is None:
        return ""
    name, value, final = best
    return f"{name} {value:.4g}" + ("" if final else " (so far)")


def _short(path: str | None) -> str:
    return Path(path).name if path else ""


_SKIP_SERIES = {"epoch", "lr", "time", "step", "epoch_time_s"}


Series = dict[str, tuple[list, list]]


def metric_series(rows: list[dict[str, Any]]) -> tuple[Series, Series]:
    """(losses, other metrics) as name -> (epochs, values), for the curves.

    Percentile/min/max companions (val_iou_p10, ...) are left out: the mean tells the story.
    """
    losses: Series = {}
    others: Series = {}
    for index, row in enumerate(rows):
        epoch = row.get("epoch", index)
        for key, value in row.items():
            if key in _SKIP_SERIES or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if re.search(r"_(p\d+|min|max)$", key):
                continue
            target = losses if "loss" in key else others
            xs, ys = target.setdefault(key, ([], []))
            xs.append(epoch)
            ys.append(value)
    return losses, others


# ---------------------------------------------------------------- processes (Linux /proc)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (index 0 = state, 2 = pgrp, 19 = starttime)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _start_time(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _reap(pid: int | None) -> None:
    """Collect a finished child of this process so that it does not linger as a zombie."""
    if not pid:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether `pid` runs (zombies count as dead) and, when given, has the recorded start time."""
    _reap(pid)
    if not Path("/proc").is_dir():  # not Linux: best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == int(start_time)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in os.listdir("/proc") if Path("/proc").is_dir() else []:
        if not entry.isdigit():
            continue
        fields = _proc_stat(int(entry))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


# ---------------------------------------------------------------- the supervisor


_ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Interrupt)|error|Killed)\b:?\s*(.*)$")


def last_error_line(log: Path) -> str:
    """The most telling error line of a log: `error: ...` from the CLI, else a traceback's last line."""
    lines = _tail_lines(log, 200)
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


class _Supervisor:
    """What `python -m core.jobs run <job dir>` does: queue for a slot, run, record the outcome."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.desc = _read_json(path / JOB_FILE)
        self.stop_requested = False
        self.child: subprocess.Popen | None = None

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        me = os.getpid()
        self.update(state=QUEUED, pid=me, pgid=os.getpgid(0), pid_start=_start_time(me),
                    queued_at=time.time())
        slot = self.desc.get("slot", "cpu")
        _say(f"queued for a {slot} slot")
        lock = self.acquire_slot(slot, int(self.desc.get("slots", 1)))
        try:
            if self.stop_requested or _read_json(self.path / STATUS_FILE).get("cancel_requested"):
                return self.finish(STOPPED, "cancelled", None)
            return self.run_command()
        finally:
            if lock is not None:
                lock.release()

    def acquire_slot(self, slot: str, slots: int):
        """Hold one of `slots` file locks under <runs>/.slots/ (0 = unlimited); None when stopped."""
        if slots <= 0:
            return None
        from filelock import FileLock, Timeout

        folder = self.path.parent / ".slots"
        folder.mkdir(exist_ok=True)
        locks = [FileLock(str(folder / f"{slot}-{i}.lock"), is_singleton=False) for i in range(slots)]
        while not self.stop_requested:
            if self.older_job_waiting(slot):  # first come, first served
                time.sleep(0.5)
                continue
            for lock in locks:
                try:
                    lock.acquire(timeout=0)
                    return lock
                except Timeout:
                    continue
            time.sleep(0.3)
        return None

    def older_job_waiting(self, slot: str) -> bool:
        """Whether a job submitted before this one still waits for the same kind of slot."""
        for path in sorted(self.path.parent.iterdir()):
            if path.name >= self.path.name:
                return False
            if path.name.startswith(".") or not (path / STATUS_FILE).is_file():
                continue
            try:
                status, desc = _read_json(path / STATUS_FILE), _read_json(path / JOB_FILE)
            except (OSError, ValueError):
                continue
            if status.get("state") in (SUBMITTED, QUEUED) and desc.get("slot") == slot \
                    and _supervisor_alive(status):
                return True
        return False

    def run_command(self) -> int:
        status = _read_json(self.path / STATUS_FILE)
        command = status.get("command") or self.desc["command"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", SLICEWISE_JOB_ID=self.desc["id"])
        if self.desc.get("device") == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        _say("running: " + " ".join(command))
        try:
            self.child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            return self.finish(ERROR, f"could not start {command[0]}: {exc}", None)
        child = self.child
        self.update(state=RUNNING, child_pid=child.pid, child_start=_start_time(child.pid),
                    started_at=time.time())
        returncode = child.wait()
        cancelled = self.stop_requested or bool(_read_json(self.path / STATUS_FILE).get("cancel_requested"))
        state, reason = final_state(returncode, cancelled, self.path / LOG_FILE)
        return self.finish(state, reason, returncode)

    def finish(self, state: str, reason: str, returncode: int | None) -> int:
        _say(f"{state}" + (f": {reason}" if reason else "") + (f" (exit {returncode})" if returncode else ""))
        self.update(state=state, reason=reason, exit_code=returncode, ended_at=time.time())
        return 0

    def update(self, **values: Any) -> None:
        with _status_lock(self.path):
            status = _read_json(self.path / STATUS_FILE)
            if status.get("state") in FINAL_STATES and values.get("state") not in FINAL_STATES:
                return
            status.update(values, updated=time.time())
            _write_json(self.path / STATUS_FILE, status)


def _say(message: str) -> None:
    print(f"[slicewise] {message}", flush=True)


# ---------------------------------------------------------------- small file helpers


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _status_lock(path: Path):
    from filelock import FileLock

    return FileLock(str(path / "status.lock"), timeout=30, is_singleton=False)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write-then-rename, so that a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def _tail_lines(path: Path, n: int, max_bytes: int = 256_000) -> list[str]:
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


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m core.jobs run <job dir>", file=sys.stderr)
        return 2
    return _Supervisor(Path(argv[1])).run()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
