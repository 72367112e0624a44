"""Process helpers for the jobs (Linux /proc): liveness with start times, process groups, signals,
and the parent-death signal that makes a trainer (and its loader workers) end with its parent.

A job runs in a process group of its own: the supervisor starts a new session, its trainer and
the trainer's data-loader workers inherit the group. Whoever ends a job ends the whole group.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from the state on (index 0 = state, 2 = pgrp, 19 = starttime)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a reused pid from the original."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def reap(pid: int | None) -> None:
    """Collect a finished child of this process so that it does not linger as a zombie."""
    if not pid:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether `pid` runs (zombies count as dead) and, when given, has the recorded start time."""
    reap(pid)
    if not Path("/proc").is_dir():  # not Linux: best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == int(start)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in os.listdir("/proc") if Path("/proc").is_dir() else []:
        if not entry.isdigit():
            continue
        fields = proc_stat(int(entry))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def job_processes(status: dict[str, Any]) -> list[int]:
    """Live processes of a job from its status: its process group's members, plus the supervisor and
    trainer pids when they still run with their recorded start times (even outside the group)."""
    found = set(group_members(int(status["pgid"]))) if status.get("pgid") else set()
    for pid_key, start_key in (("pid", "pid_start"), ("child_pid", "child_start")):
        pid = status.get(pid_key)
        if pid and pid_alive(pid, status.get(start_key)):
            found.add(int(pid))
    found.discard(os.getpid())
    return sorted(found)


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(status: dict[str, Any], timeout: float) -> bool:
    """Wait until no process of the job is left; True when none is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(status.get("pid"))
        if not job_processes(status):
            return True
        time.sleep(0.05)
    return not job_processes(status)


def end_job_processes(status: dict[str, Any], grace_s: float = 0.0) -> bool:
    """End every process of a job: SIGTERM first when `grace_s` > 0, SIGKILL after (or at once).
    True when none is left."""
    pgid = status.get("pgid")
    if not job_processes(status):
        return True
    if grace_s > 0:
        _signal_all(status, pgid, signal.SIGTERM)
        if wait_gone(status, grace_s):
            return True
    _signal_all(status, pgid, signal.SIGKILL)
    return wait_gone(status, 5.0)


def _signal_all(status: dict[str, Any], pgid: int | None, sig: int) -> None:
    if pgid and pgid != os.getpgid(0):
        signal_group(int(pgid), sig)
    for pid in job_processes(status):  # strays outside the group (or when we share it)
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def set_parent_death_signal(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux prctl
    PR_SET_PDEATHSIG); when the parent is already gone (`parent` given and no longer ours), exit.
    False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and parent is not None and os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed
    return ok


def die_with_parent_preexec(parent: int):
    """A Popen `preexec_fn` that arms the parent-death signal in the child (see above)."""
    def arm() -> None:
        set_parent_death_signal(signal.SIGKILL, parent)

    return arm


class _ForkHook:
    """Weak-referencable owner of the after-fork hook (multiprocessing keeps hooks weakly)."""

    def __init__(self) -> None:
        self.parent = os.getpid()


_HOOK: _ForkHook | None = None


def end_forked_children_with_this_process() -> None:
    """Every multiprocessing child forked from here on (data-loader workers) gets the parent-death
    signal, so that it ends at once when this process dies, even by SIGKILL (torch's own watchdog
    takes up to 5 s)."""
    global _HOOK
    import multiprocessing.util

    if _HOOK is not None and _HOOK.parent == os.getpid():
        return
    _HOOK = _ForkHook()
    multiprocessing.util.register_after_fork(_HOOK, _arm_in_child)


def _arm_in_child(hook: _ForkHook) -> None:
    set_parent_death_signal(signal.SIGKILL, hook.parent)
    hook.parent = os.getpid()  # this child's own children (if any) then check against it
