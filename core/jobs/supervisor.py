"""The supervisor of one job: `python -m core.jobs.supervisor <job dir>`.

It queues for a slot (a file lock per slot under `<runs>/.slots/`, first come first served),
runs the job's command as its child and records the outcome in `status.json`. The child gets
the parent-death signal, so a supervisor killed outright takes its trainer with it; when the
command ends, whatever it left in the job's process group (loader workers) is ended too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.jobs import procs
from core.jobs.files import (
    ERROR,
    FINAL_STATES,
    JOB_FILE,
    LOG_FILE,
    QUEUED,
    RUNNING,
    STATUS_FILE,
    STOPPED,
    SUBMITTED,
    final_state,
    read_json,
    status_lock,
    supervisor_alive,
    write_json,
)
from core.settings import REPO_ROOT


class Supervisor:
    """Queue for a slot, run, record the outcome."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.desc = read_json(path / JOB_FILE)
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
        self.update(state=QUEUED, pid=me, pgid=os.getpgid(0), pid_start=procs.start_time(me),
                    queued_at=time.time())
        slot = self.desc.get("slot", "cpu")
        say(f"queued for a {slot} slot")
        lock = self.acquire_slot(slot, int(self.desc.get("slots", 1)))
        try:
            if self.stop_requested or read_json(self.path / STATUS_FILE).get("cancel_requested"):
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
                status, desc = read_json(path / STATUS_FILE), read_json(path / JOB_FILE)
            except (OSError, ValueError):
                continue
            if status.get("state") in (SUBMITTED, QUEUED) and desc.get("slot") == slot \
                    and supervisor_alive(status):
                return True
        return False

    def run_command(self) -> int:
        status = read_json(self.path / STATUS_FILE)
        command = status.get("command") or self.desc["command"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", SLICEWISE_JOB_ID=self.desc["id"])
        if self.desc.get("device") == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        say("running: " + " ".join(command))
        try:
            self.child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                          preexec_fn=procs.die_with_parent_preexec(os.getpid()))
        except OSError as exc:
            return self.finish(ERROR, f"could not start {command[0]}: {exc}", None)
        child = self.child
        self.update(state=RUNNING, child_pid=child.pid, child_start=procs.start_time(child.pid),
                    started_at=time.time())
        returncode = child.wait()
        self.end_leftovers()
        cancelled = self.stop_requested or bool(read_json(self.path / STATUS_FILE).get("cancel_requested"))
        state, reason = final_state(returncode, cancelled, self.path / LOG_FILE)
        return self.finish(state, reason, returncode)

    def end_leftovers(self) -> None:
        """The command has ended: anything it left in the job's process group (data-loader workers
        of a killed trainer, a grandchild) is ended before the job is called final."""
        me = os.getpid()
        left = [pid for pid in procs.group_members(os.getpgid(0)) if pid != me]
        if not left:
            return
        say(f"ending {len(left)} leftover process(es) of the command: {left}")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                left = [pid for pid in left if procs.pid_alive(pid)]
                if not left:
                    return
                time.sleep(0.05)

    def finish(self, state: str, reason: str, returncode: int | None) -> int:
        say(f"{state}" + (f": {reason}" if reason else "") + (f" (exit {returncode})" if returncode else ""))
        self.update(state=state, reason=reason, exit_code=returncode, ended_at=time.time())
        return 0

    def update(self, **values: Any) -> None:
        with status_lock(self.path):
            status = read_json(self.path / STATUS_FILE)
            if status.get("state") in FINAL_STATES and values.get("state") not in FINAL_STATES:
                return
            status.update(values, updated=time.time())
            write_json(self.path / STATUS_FILE, status)


def say(message: str) -> None:
    print(f"[slicewise] {message}", flush=True)


def main(argv: list[str]) -> int:
    """`<job dir>`, or the older `run <job dir>` form."""
    if len(argv) == 2 and argv[0] == "run":
        argv = argv[1:]
    if len(argv) != 1:
        print("usage: python -m core.jobs.supervisor <job dir>", file=sys.stderr)
        return 2
    return Supervisor(Path(argv[0])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
