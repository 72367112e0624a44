"""The multi-device path without a GPU: Lightning DDP over two CPU processes (gloo) trains the toy
family (tests/toy_family.py) to the same result as one process with the same global batch.

Both runs go through `python -m core train`, as the background jobs do: Lightning starts the second
rank by running that command again. Each rank sees half of every global batch (Lightning puts a
DistributedSampler in, which shuffles with its own order) and DDP averages the two gradients, so
the two runs take the same number of steps on the same epochs; their orders differ, so their
losses agree closely, not bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import pids_where

REPO = Path(__file__).resolve().parents[1]
EPOCHS, GLOBAL_BATCH = 4, 8


def _train(run: Path, data: Path, processes: int) -> dict:
    env = {**os.environ, "SLICEWISE_FAMILY_MODULES": "tests.toy_family", "SLICEWISE_RUNS": str(run.parent),
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    settings = {"device": "cpu", "devices": processes, "batch_size": GLOBAL_BATCH // processes,
                "max_epochs": EPOCHS, "num_workers": 0, "seed": 3}
    command = [sys.executable, "-m", "core", "train", "--family", "toy_blobs", "--data", str(data),
               "--out", str(run)] + [x for k, v in settings.items() for x in ("--set", f"{k}={v}")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {"result": json.loads((run / "result.json").read_text()), "checkpoint": checkpoint,
            "config": json.loads((run / "config.json").read_text()),
            "metrics": [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]}


@pytest.mark.train
def test_ddp_over_two_cpu_processes_trains_to_the_one_process_result(toy_env):
    from tests.toy_family import blob_volume  # registers the toy family until toy_env ends

    tmp_path, data = toy_env, toy_env / "data" / "toy_set"
    one = _train(tmp_path / "runs" / "one", data, 1)
    two = _train(tmp_path / "runs" / "two", data, 2)

    assert one["config"]["strategy"] == "auto" and two["config"]["strategy"] == "ddp"
    assert one["checkpoint"]["slicewise"]["world_size"] == 1
    assert two["checkpoint"]["slicewise"]["world_size"] == 2  # two processes trained it
    steps = EPOCHS * 160 // GLOBAL_BATCH  # 40 volumes of 4 slices
    assert one["checkpoint"]["global_step"] == two["checkpoint"]["global_step"] == steps
    assert len(one["metrics"]) == len(two["metrics"]) == EPOCHS  # rank 0 alone writes the run files

    loss_one = one["result"]["final_metrics"]["val_loss"]
    loss_two = two["result"]["final_metrics"]["val_loss"]
    p = float(np.mean([blob_volume(s)[1].mean() for s in range(1000, 1008)]))
    constant = -(p * math.log(p) + (1 - p) * math.log(1 - p))  # the best constant guess
    print(f"\nval_loss one process {loss_one:.4f}, two DDP processes {loss_two:.4f}, constant {constant:.4f}")
    assert loss_one < 0.3 * constant and loss_two < 0.3 * constant  # both learned the blobs
    assert abs(loss_two - loss_one) < 0.2 * loss_one + 0.005  # and to the same result


def test_devices_setting_chooses_the_strategy():
    from core.train.loop import trainer_kwargs

    assert trainer_kwargs({"device": "cpu"})["strategy"] == "auto"
    for count in (0, 1):
        assert trainer_kwargs({"device": "cpu", "devices": count}) == {
            "accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true"}
    assert trainer_kwargs({"device": "cpu", "devices": 3}) == {
        "accelerator": "cpu", "devices": 3, "strategy": "ddp", "precision": "32-true"}


def test_devices_must_not_be_negative(tmp_path):
    from core.train.config import SettingsError, check_range

    check_range("devices", 0)
    with pytest.raises(SettingsError, match="devices"):
        check_range("devices", -1)


def _trainers(run_dir: Path) -> list[int]:
    """Pids of the `python -m core train` processes (every DDP rank) writing into `run_dir`."""
    return pids_where(lambda args: b"train" in args and str(run_dir).encode() in args)


@pytest.mark.train
def test_cancel_ends_every_ddp_process(toy_env, monkeypatch):
    """A background job training with two CPU processes: Cancel ends both ranks (one process group)."""
    import time

    from core import jobs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    root, runs_root = toy_env / "data", toy_env / "runs"
    job = jobs.submit("toy_blobs", root / "toy_set", {"devices": 2, "batch_size": 4, "max_epochs": 5000},
                      device="cpu", runs_root=runs_root)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = jobs.get(job.id, runs_root=runs_root)
        if len(_trainers(job.dir)) == 2 and (job.dir / "metrics.jsonl").is_file():
            break
        assert job.state not in jobs.FINAL_STATES, jobs.tail_log(job.id, 40, runs_root=runs_root)
        time.sleep(0.3)
    else:
        raise AssertionError(f"two ranks never ran: {jobs.tail_log(job.id, 40, runs_root=runs_root)}")
    jobs.cancel(job.id, runs_root=runs_root)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
            _trainers(job.dir) or not jobs.get(job.id, runs_root=runs_root).final):
        time.sleep(0.3)
    assert _trainers(job.dir) == []
    assert jobs.get(job.id, runs_root=runs_root).state == jobs.STOPPED
