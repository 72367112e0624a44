"""Background jobs with real subprocesses: queue, cancel, errors, resume, reading the run folder."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core import jobs
from core.errors import JobError

PY = sys.executable


def wait_for(job_id: str, root: Path, states: set[str], timeout: float = 120.0) -> jobs.Job:
    """Poll like the Train page does until the job reaches one of `states`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(job_id, runs_root=root)
        if job.state in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"{job_id} stuck in {job.state}; log:\n{jobs.tail_log(job_id, 40, runs_root=root)}")


def wait_for_line(job_id: str, root: Path, start: str, timeout: float = 60.0) -> str:
    """The first log line that starts with `start` (the echoed command line never does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = jobs.tail_log(job_id, 200, runs_root=root).splitlines()
        found = [line for line in lines if line.startswith(start)]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no line starting {start!r} in the log of {job_id}:\n" + "\n".join(lines))


def alive(pid: int) -> bool:
    """Running and not a zombie, checked through /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# A command that starts a grandchild, prints its pid and sleeps: the tree `cancel` must end.
TREE = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
    "print('grandchild', p.pid, flush=True)\n"
    "time.sleep(300)\n"
)


# Tiny lung-box settings: ResNet-18 at 32 px from scratch, on the CPU.
TINY = {"backbone": "resnet18", "image_size": 32, "batch_size": 4, "num_workers": 0, "pretrained": False,
        "augment": False, "max_epochs": 2}


def write_tiny_prepared(out: Path, n_train: int = 8, n_val: int = 4, size: int = 32, seed: int = 0) -> Path:
    """A prepared lung-box data set in the prepare step's format: bright 'lung' rectangles and their boxes."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("train", n_train), ("val", n_val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            x0, y0 = rng.uniform(0.1, 0.3, 2)
            x1, y1 = rng.uniform(0.7, 0.9, 2)
            image = np.full((size, size), 0.1, np.float32)
            image[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)] = 0.8
            name = f"{split}/{i}.npy"
            np.save(out / name, image.astype(np.float16))
            rows.append([f"{split}-{i}", x0, y0, x1, y1, f"series-{split}-{i % 3}", i, split, name])
    with open(out / "boxes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image", "Xmin", "Ymin", "Xmax", "Ymax", "Volume", "Slice", "split", "file"])
        writer.writerows(rows)
    (out / "stats.json").write_text(json.dumps({"mean": 0.3, "std": 0.3, "size": size,
                                                "n_train": n_train, "n_val": n_val}))
    return out


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("SLICEWISE_GPU_JOBS", raising=False)
    monkeypatch.delenv("SLICEWISE_CPU_JOBS", raising=False)
    return tmp_path / "runs"


def test_command_job_goes_done_and_writes_its_files(root):
    job = jobs.submit_command([PY, "-c", "print('hello from the job')"], runs_root=root)
    assert job.state in (jobs.SUBMITTED, jobs.QUEUED, jobs.RUNNING, jobs.DONE)
    done = wait_for(job.id, root, jobs.FINAL_STATES)
    assert done.state == jobs.DONE and done.exit_code == 0 and done.reason == ""
    assert "hello from the job" in jobs.tail_log(job.id, runs_root=root)
    desc = json.loads((root / job.id / "job.json").read_text())
    assert desc["command"][-1] == "print('hello from the job')" and desc["id"] == job.id
    assert done.started is not None and done.ended >= done.started
    assert [j.id for j in jobs.list_jobs(root)] == [job.id]


def test_job_ids_sort_by_creation_time():
    ids = [jobs.new_job_id() for _ in range(3)]
    time.sleep(0.002)
    later = jobs.new_job_id()
    assert len(set(ids)) == 3 and max(ids) < later


def test_cancel_stops_the_whole_process_tree(root):
    job = jobs.submit_command([PY, "-c", TREE], runs_root=root)
    grandchild = int(wait_for_line(job.id, root, "grandchild").split()[1])
    running = wait_for(job.id, root, {jobs.RUNNING})
    pids = [running.pid, running.child_pid, grandchild]
    assert all(alive(pid) for pid in pids)

    stopped = jobs.cancel(job.id, runs_root=root)

    assert stopped.state == jobs.STOPPED and stopped.reason == "cancelled"
    assert not [pid for pid in pids if alive(pid)]
    assert jobs.group_members(running.status["pgid"]) == []
    assert jobs.get(job.id, runs_root=root).state == jobs.STOPPED


def test_cancel_kills_a_job_that_ignores_sigterm(root):
    stubborn = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\ntime.sleep(300)\n")
    job = jobs.submit_command([PY, "-c", stubborn], runs_root=root)
    wait_for_line(job.id, root, "ready")
    running = jobs.get(job.id, runs_root=root)

    stopped = jobs.cancel(job.id, runs_root=root, grace_s=0.5)

    assert stopped.state == jobs.STOPPED
    assert not alive(running.child_pid) and not alive(running.pid)


def test_cancel_a_queued_job(root):
    first = jobs.submit_command([PY, "-c", "import time; time.sleep(300)"], runs_root=root)
    wait_for(first.id, root, {jobs.RUNNING})
    second = jobs.submit_command([PY, "-c", "print('never')"], runs_root=root)
    assert wait_for(second.id, root, {jobs.QUEUED}).state == jobs.QUEUED

    assert jobs.cancel(second.id, runs_root=root).state == jobs.STOPPED
    assert jobs.cancel(first.id, runs_root=root).state == jobs.STOPPED
    assert "never" not in jobs.tail_log(second.id, runs_root=root)


def test_queue_runs_gpu_slot_jobs_one_after_the_other(root):
    # The slot is what is queued; the command itself needs no GPU.
    sleeper = [PY, "-c", "import time; print('start', time.time(), flush=True); time.sleep(1)"]
    first = jobs.submit_command(sleeper, device="cuda", runs_root=root)
    second = jobs.submit_command(sleeper, device="cuda", runs_root=root)
    assert first.slot == second.slot == "gpu"

    a = wait_for(first.id, root, jobs.FINAL_STATES)
    b = wait_for(second.id, root, jobs.FINAL_STATES)

    assert a.state == b.state == jobs.DONE
    assert b.started >= a.ended  # the second waited for the first's slot
    assert b.status["queued_at"] < a.ended


def test_two_slots_let_two_jobs_run_together(root, monkeypatch):
    monkeypatch.setenv("SLICEWISE_GPU_JOBS", "2")
    sleeper = [PY, "-c", "import time; time.sleep(3)"]
    first = jobs.submit_command(sleeper, device="cuda", runs_root=root)
    second = jobs.submit_command(sleeper, device="cuda", runs_root=root)
    wait_for(first.id, root, {jobs.RUNNING})
    assert wait_for(second.id, root, {jobs.RUNNING}).state == jobs.RUNNING
    for job in (first, second):
        jobs.cancel(job.id, runs_root=root)


def test_failed_command_reports_the_cli_error_line(root):
    cmd = [PY, "-c", "import sys; print('working'); sys.exit('error: /data/x: no annotated slices')"]
    job = jobs.submit_command(cmd, runs_root=root)
    failed = wait_for(job.id, root, jobs.FINAL_STATES)
    assert failed.state == jobs.ERROR and failed.exit_code == 1
    assert failed.reason == "/data/x: no annotated slices"


def test_crash_reports_the_traceback_line(root):
    job = jobs.submit_command([PY, "-c", "raise ValueError('shape mismatch in layer4')"], runs_root=root)
    failed = wait_for(job.id, root, jobs.FINAL_STATES)
    assert failed.state == jobs.ERROR and failed.reason == "ValueError: shape mismatch in layer4"


def test_killed_trainer_is_an_error_with_the_signal(root):
    job = jobs.submit_command([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                              runs_root=root)
    failed = wait_for(job.id, root, jobs.FINAL_STATES)
    assert failed.state == jobs.ERROR and failed.reason == "killed by SIGKILL (out of memory?)"


def test_vanished_supervisor_is_marked_error(root):
    job = jobs.submit_command([PY, "-c", "import time; time.sleep(300)"], runs_root=root)
    running = wait_for(job.id, root, {jobs.RUNNING})
    os.killpg(running.status["pgid"], signal.SIGKILL)  # supervisor and trainer die without a word
    deadline = time.monotonic() + 10
    while alive(running.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    [listed] = jobs.list_jobs(root)

    assert listed.state == jobs.ERROR and listed.reason.startswith("process vanished")


def test_reason_from_log_prefers_out_of_memory(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("epoch 1\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
                   "error: training failed\n")
    assert jobs.last_error_line(log).startswith("out of memory")
    assert jobs.final_state(1, False, log)[0] == jobs.ERROR
    assert jobs.final_state(-15, True, log) == (jobs.STOPPED, "cancelled")
    assert jobs.final_state(0, False, log) == (jobs.DONE, "")
    (tmp_path / "empty.log").write_text("")
    assert jobs.final_state(3, False, tmp_path / "empty.log") == (jobs.ERROR, "exited with code 3")


def test_metrics_progress_and_checkpoints_are_read_from_the_run_folder(root):
    writer = (
        "import json, os, pathlib\n"
        "run = pathlib.Path(os.environ['RUN'])\n"
        "rows = [json.dumps({'epoch': 0, 'train_loss': 1.0, 'val_loss': 0.9}),"
        " json.dumps({'epoch': 1, 'train_loss': 0.5, 'val_loss': 0.4}), '{\"epoch\": 2, \"tr']\n"
        "(run / 'metrics.jsonl').write_text('\\n'.join(rows))\n"
        "(run / 'progress.json').write_text(json.dumps({'epoch': 1, 'max_epochs': 4, 'step': 30,"
        " 'steps_per_epoch': 20, 'elapsed_s': 30.0, 'updated': 1.0}))\n"
        "(run / 'checkpoints').mkdir()\n"
        "(run / 'checkpoints' / 'last.ckpt').write_bytes(b'x')\n"
        "best = 'checkpoints/epoch=1-val_loss=0.40.ckpt'\n"
        "(run / best).write_bytes(b'x')\n"
        "(run / 'result.json').write_text(json.dumps({'best_checkpoint': best}))\n"
    )
    job = jobs.submit_command(lambda run: [PY, "-c", writer.replace("os.environ['RUN']", repr(str(run)))],
                              runs_root=root)
    assert wait_for(job.id, root, jobs.FINAL_STATES).state == jobs.DONE

    rows = jobs.metrics(job.id, runs_root=root)
    assert [r["epoch"] for r in rows] == [0, 1]  # the half-written line is skipped
    prog = jobs.progress(job.id, runs_root=root)
    assert (prog.epoch, prog.max_epochs, prog.step) == (1, 4, 30)
    assert prog.eta_s == pytest.approx(30.0 * (1 - 30 / 80) / (30 / 80))
    assert prog.fraction == pytest.approx((1 + 10 / 20) / 4)
    best = jobs.best_checkpoint(job.id, runs_root=root)
    assert best.name == "epoch=1-val_loss=0.40.ckpt"
    assert jobs.list_checkpoints(root)[0] == best
    assert {p.name for p in jobs.list_checkpoints(root)} == {"last.ckpt", best.name}


def test_a_job_without_progress_or_metrics_reads_as_empty(root):
    job = jobs.submit_command([PY, "-c", "pass"], runs_root=root)
    wait_for(job.id, root, jobs.FINAL_STATES)
    assert jobs.metrics(job.id, runs_root=root) == []
    assert jobs.progress(job.id, runs_root=root) is None
    assert jobs.best_checkpoint(job.id, runs_root=root) is None


def test_list_jobs_of_a_missing_runs_folder_is_empty(tmp_path):
    assert jobs.list_jobs(tmp_path / "nothing") == []
    assert jobs.list_checkpoints(tmp_path / "nothing") == []


# ---------------------------------------------------------------- errors


def test_unknown_job_id_raises(root):
    root.mkdir(parents=True)
    for call in (jobs.get, jobs.cancel, jobs.resume, jobs.tail_log, jobs.metrics, jobs.progress,
                 jobs.best_checkpoint):
        with pytest.raises(JobError, match="no such job"):
            call("20240101-000000-000-abcd", runs_root=root)
    with pytest.raises(JobError, match="not a job id"):
        jobs.get("../etc", runs_root=root)


def test_cancel_a_finished_job_raises(root):
    job = jobs.submit_command([PY, "-c", "pass"], runs_root=root)
    wait_for(job.id, root, jobs.FINAL_STATES)
    with pytest.raises(JobError, match="already DONE"):
        jobs.cancel(job.id, runs_root=root)


def test_resume_refuses_running_and_command_jobs(root):
    job = jobs.submit_command([PY, "-c", "import time; time.sleep(300)"], runs_root=root)
    wait_for(job.id, root, {jobs.RUNNING})
    with pytest.raises(JobError, match="is RUNNING"):
        jobs.resume(job.id, runs_root=root)
    jobs.cancel(job.id, runs_root=root)
    with pytest.raises(JobError, match="only training jobs resume"):
        jobs.resume(job.id, runs_root=root)


def test_bad_device_and_slot_settings_raise(root, monkeypatch):
    with pytest.raises(JobError, match="device 'tpu'"):
        jobs.resolve_device("tpu")
    monkeypatch.setenv("SLICEWISE_GPU_JOBS", "one")
    with pytest.raises(JobError, match="SLICEWISE_GPU_JOBS"):
        jobs.slot_limit("gpu")
    monkeypatch.setenv("SLICEWISE_CPU_JOBS", "-1")
    with pytest.raises(JobError, match="SLICEWISE_CPU_JOBS"):
        jobs.slot_limit("cpu")


def test_submit_checks_family_and_data(root, tmp_path):
    with pytest.raises(JobError, match="does not exist"):
        jobs.submit("lung_localizer", tmp_path / "missing", runs_root=root)
    with pytest.raises(JobError, match="unknown model family 'nope'"):
        jobs.submit("nope", tmp_path, runs_root=root)
    assert not root.exists() or list(root.iterdir()) == []


# ---------------------------------------------------------------- the real trainer


@pytest.mark.train
def test_training_on_bad_data_ends_in_error_with_the_trainers_reason(root, tmp_path, data_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    job = jobs.submit("lung_localizer", empty, TINY, device="cpu", runs_root=root)

    failed = wait_for(job.id, root, jobs.FINAL_STATES, timeout=120)

    assert failed.state == jobs.ERROR and failed.exit_code == 2
    assert "lung_bbox.csv: annotation CSV not found" in failed.reason
    with pytest.raises(JobError, match="no checkpoint to resume from"):
        jobs.resume(job.id, runs_root=root)


# ---------------------------------------------------------------- supervision


def _wait_dead(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and [p for p in pids if alive(p)]:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_killed_supervisor_takes_its_trainer_along_and_the_job_ends_clean(root):
    job = jobs.submit_command([PY, "-c", TREE], runs_root=root)
    grandchild = int(wait_for_line(job.id, root, "grandchild").split()[1])
    running = wait_for(job.id, root, {jobs.RUNNING})
    assert alive(running.child_pid) and alive(grandchild)

    os.kill(running.pid, signal.SIGKILL)  # the supervisor alone, without a word

    # the trainer dies with its supervisor (parent-death signal), without anyone polling
    assert _wait_dead([running.pid, running.child_pid], 5.0) == []
    # reading the job ends what is left (here a grandchild) before calling it ERROR
    listed = jobs.get(job.id, runs_root=root)
    assert listed.state == jobs.ERROR and listed.reason.startswith("process vanished")
    assert _wait_dead([grandchild], 5.0) == []
    assert jobs.job_processes(listed.status) == []


def _fake_train_job(root: Path, status: dict) -> str:
    """A training job's folder as the jobs write it, with a last checkpoint, in the given state."""
    job_id = jobs.new_job_id()
    path = root / job_id
    (path / "checkpoints").mkdir(parents=True)
    (path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (path / "job.json").write_text(json.dumps({
        "id": job_id, "kind": "train", "family": "lung_localizer", "data": str(root), "settings": {},
        "device": "cpu", "slot": "cpu", "command": [PY, "-m", "core", "train"]}))
    (path / "status.json").write_text(json.dumps({"attempt": 1, "updated": time.time(), **status}))
    return job_id


def test_resume_refuses_while_a_process_of_the_job_is_alive(root):
    import subprocess

    stray = subprocess.Popen([PY, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        job_id = _fake_train_job(root, {"state": jobs.ERROR, "reason": "process vanished", "pid": 999999999,
                                        "pgid": stray.pid})
        with pytest.raises(JobError, match=rf"still has running processes \[{stray.pid}\]"):
            jobs.resume(job_id, runs_root=root)
        assert jobs.get(job_id, runs_root=root).state == jobs.ERROR  # nothing was started
        # cancel ends what is left of a final job, and then resuming may start the job again
        jobs.cancel(job_id, runs_root=root, grace_s=0.5)
        assert _wait_dead([stray.pid], 5.0) == []
    finally:
        stray.kill()
        stray.wait()


def test_resume_refuses_a_job_that_failed_on_its_data(root):
    job_id = _fake_train_job(root, {"state": jobs.ERROR, "reason": "no annotated slices", "exit_code": 2})
    job = jobs.get(job_id, runs_root=root)
    assert jobs.is_data_error(job) and not jobs.resumable(job)
    with pytest.raises(JobError, match="would fail the same way"):
        jobs.resume(job_id, runs_root=root)
    stopped = _fake_train_job(root, {"state": jobs.STOPPED, "reason": "cancelled"})
    assert jobs.resumable(jobs.get(stopped, runs_root=root))


def test_submit_refuses_settings_out_of_range_before_anything_starts(root, tmp_path):
    for bad, words in (({"max_epochs": -3}, "max_epochs=-3 is out of range: max_epochs must be >= 1"),
                       ({"lr": 0.0}, "lr must be > 0"), ({"val_fraction": 1.0}, "in (0, 1)"),
                       ({"batch_size": 0}, "batch_size must be >= 1"), ({"backbone": "vgg"}, "not one of"),
                       ({"max_epochs": "many"}, "expects int")):
        with pytest.raises(JobError, match=re.escape(words)):
            jobs.submit("lung_localizer", tmp_path, bad, device="cpu", runs_root=root)
    assert not root.exists() or list(root.iterdir()) == []


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _trainers(run: Path) -> list[int]:
    """Live `python -m core train ... --out <run>` processes (the trainers of that run folder; their
    forked data-loader workers share the command line and are left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in argv and str(run).encode() in argv and alive(int(entry)):
            found.append(int(entry))
    parents = {pid: _parent(pid) for pid in found}
    return [pid for pid, parent in parents.items() if parent is not None and parent not in parents]


@pytest.mark.train
def test_killed_supervisor_then_resume_twice_continues_the_epochs(root, tmp_path):
    """kill -9 of the supervisor: no process of the job survives (loader worker included), ERROR;
    resume starts one trainer; a second resume continues again: epochs 0..n without repeats, one
    canonical last.ckpt holding the newest epoch."""
    import torch

    data = write_tiny_prepared(tmp_path / "prepared")
    job = jobs.submit("lung_localizer", data, {**TINY, "max_epochs": 200, "num_workers": 1}, device="cpu",
                      runs_root=root)
    assert job.family == "lung_localizer" and job.settings["device"] == "cpu"
    assert job.command[1:4] == ["-m", "core", "train"]
    run = root / job.id
    deadline = time.monotonic() + 180
    while not (run / "checkpoints" / "last.ckpt").is_file():
        assert time.monotonic() < deadline and not jobs.get(job.id, runs_root=root).final, \
            jobs.tail_log(job.id, 40, runs_root=root)
        time.sleep(0.1)
    running = jobs.get(job.id, runs_root=root)
    tree = jobs.job_processes(running.status)  # supervisor, trainer, data-loader worker
    assert len(tree) >= 3, tree

    os.kill(running.pid, signal.SIGKILL)

    assert _wait_dead(tree, 5.0) == []  # before anyone reads the job
    failed = jobs.get(job.id, runs_root=root)
    assert failed.state == jobs.ERROR and failed.reason.startswith("process vanished")
    assert jobs.resumable(failed)
    done = len(jobs.metrics(job.id, runs_root=root))
    assert done >= 1

    for target in (done + 1, done + 2):
        resumed = jobs.resume(job.id, {"max_epochs": target}, runs_root=root)
        assert resumed.command[-1] == "--resume"
        with pytest.raises(JobError):  # a second resume while this one runs is refused
            jobs.resume(job.id, {"max_epochs": target}, runs_root=root)
        while not (current := jobs.get(job.id, runs_root=root)).final:
            trainers = _trainers(run)
            assert len(trainers) <= 1, trainers
            time.sleep(0.2)
        assert current.state == jobs.DONE, jobs.tail_log(job.id, 40, runs_root=root)

    epochs = [row["epoch"] for row in jobs.metrics(job.id, runs_root=root)]
    # the epoch killed mid-way is trained again from last.ckpt; no finished epoch is repeated
    assert epochs == list(range(done + 2)), epochs
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not [name for name in checkpoints if name.startswith("last-")], checkpoints
    last = run / "checkpoints" / "last.ckpt"
    assert not last.is_symlink()  # a full checkpoint of the last epoch (0-based index below)
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == done + 1
    result = json.loads((run / "result.json").read_text())
    assert result["last_checkpoint"] == str(last)
    assert "val_iou" in jobs.metrics(job.id, runs_root=root)[-1]
    assert jobs.best_checkpoint(job.id, runs_root=root) == Path(result["best_checkpoint"])
    assert jobs.list_checkpoints(root)[0] == Path(result["best_checkpoint"])
    assert jobs.get(job.id, runs_root=root).attempt == 3
    assert jobs.tail_log(job.id, 400, runs_root=root).count("resumed at") == 2
    with pytest.raises(JobError, match="finished"):
        jobs.resume(job.id, runs_root=root)


@pytest.mark.train
def test_loader_workers_end_with_a_killed_trainer(root, tmp_path):
    data = write_tiny_prepared(tmp_path / "prepared")
    job = jobs.submit("lung_localizer", data, {**TINY, "max_epochs": 200, "num_workers": 2}, device="cpu",
                      runs_root=root)
    deadline = time.monotonic() + 180
    while True:
        running = jobs.get(job.id, runs_root=root)
        workers = [p for p in jobs.job_processes(running.status) if p not in (running.pid, running.child_pid)]
        if running.state == jobs.RUNNING and len(workers) >= 2:
            break
        assert time.monotonic() < deadline and not running.final, jobs.tail_log(job.id, 40, runs_root=root)
        time.sleep(0.1)

    os.kill(running.child_pid, signal.SIGKILL)

    assert _wait_dead(workers, 2.0) == []  # at once, not after torch's 5 s watchdog
    failed = wait_for(job.id, root, jobs.FINAL_STATES, timeout=30)
    assert failed.state == jobs.ERROR and "SIGKILL" in failed.reason
    assert _wait_dead(jobs.job_processes(failed.status), 5.0) == []  # the supervisor exits after the record


def test_the_supervisor_entry_points_answer(tmp_path):
    import subprocess

    for module in ("core.jobs.supervisor", "core.jobs"):
        result = subprocess.run([PY, "-m", module], capture_output=True, text=True, timeout=60,
                                cwd=Path(__file__).resolve().parents[1])
        assert result.returncode == 2 and "usage: python -m core.jobs.supervisor <job dir>" in result.stderr
