"""CT classifier: preprocessing throughput (cached vs not) and one training epoch, ours vs a bare loop.

1. Preprocessing: `--volumes` demo phantoms per class of `--shape` written as .nii.gz; volumes/s for
   the first pass (read + clip + rotate + resize + write the cache, then load it) and for a second
   pass (cache hits: key + load).
2. Training: the Lightning engine (`core.train.loop.fit`, quick preset sizes) vs a bare PyTorch loop
   doing the same work per epoch on the same preprocessed volumes: the same DataLoader and model,
   the rotation augmentation, BCE + Adam + the LR schedule per step, precise-BN recalibration, a
   validation pass and one checkpoint save. Timed per epoch after the first (warm-up):
     train   first batch fetch to the last step's end; "train ratio" = bare / ours (>= 0.95 claimed)
     wait    share of the step cycle spent between steps (loader + loop bookkeeping; <= 10 % claimed)
     epoch   the whole epoch (validation, BN recalibration, checkpoint, run files included)
   The two loops run alternately `--repeats` times (the machine may be shared): medians and the best
   run of each are shown, with the load average.

Run: `.venv/bin/python -m bench.bench_ct_classifier [--volumes 24 --shape 32,128,128 --epochs 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from core.models import get_spec
from core.models.ct_classifier.data import discover, preprocess_cases
from core.models.ct_classifier.demo import write_ct_volumes
from core.models.ct_classifier.net import build_model, model_args
from core.models.ct_classifier.preprocess import Preprocessing
from core.models.ct_classifier.train import (
    EpochShuffle,
    VolumeSet,
    augmentation_angles,
    recalibrate_batch_norm,
    rotate_in_plane,
    staircase_decay,
)
from core.train.loop import fit


class EpochClock(pl.Callback):
    """Per epoch (after `skip`): train seconds, whole-epoch seconds; per step: step and wait seconds."""

    def __init__(self, skip: int = 1) -> None:
        self.skip = skip
        self.train_s, self.epoch_s, self.steps, self.waits = [], [], [], []
        self._t0 = self._last = self._step0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = self._last = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step0 = time.perf_counter()
        if trainer.current_epoch >= self.skip:
            self.waits.append(self._step0 - self._last)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last = time.perf_counter()
        if trainer.current_epoch >= self.skip:
            self.steps.append(self._last - self._step0)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.skip:
            self.train_s.append(self._last - self._t0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.skip:
            self.epoch_s.append(time.perf_counter() - self._t0)


def bench_preprocessing(data: Path, prep: Preprocessing, cache: Path) -> dict[str, float]:
    cases = discover(data).train + discover(data).val
    timings = {}
    for name in ("uncached", "cached"):  # both end with the array in memory, as training needs it
        start = time.perf_counter()
        done = preprocess_cases(cases, prep, cache, progress=lambda _m: None)
        arrays = [np.load(f) for f in done.files]
        timings[name] = len(arrays) / (time.perf_counter() - start)
    return timings


def bare_loop(settings: dict, train_set: VolumeSet, val_set: VolumeSet, epochs: int, out: Path) -> dict:
    torch.manual_seed(int(settings["seed"]))
    model = build_model(**model_args(settings))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(settings["lr"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, staircase_decay(float(settings["lr_decay_rate"]), int(settings["lr_decay_steps"])))
    bs = int(settings["batch_size"])
    epoch_ref = [0]
    sampler = EpochShuffle(len(train_set), 0, lambda: epoch_ref[0])
    loader = DataLoader(train_set, batch_size=bs, sampler=sampler, drop_last=len(train_set) > bs)
    val_loader = DataLoader(val_set, batch_size=bs, num_workers=0)
    clock = {"train_s": [], "epoch_s": [], "steps": [], "waits": []}
    for epoch in range(epochs):
        epoch_ref[0] = epoch
        t0 = last = time.perf_counter()
        model.train()
        loss_sum = torch.zeros(())
        for batch_idx, (x, y) in enumerate(loader):
            s0 = time.perf_counter()
            x = rotate_in_plane(x, augmentation_angles(0, epoch, batch_idx, x.shape[0]))
            logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
            _ = ((logits > 0).float() == y).float().mean()
            if epoch >= 1:
                clock["waits"].append(s0 - last)
                clock["steps"].append(time.perf_counter() - s0)
            last = time.perf_counter()
        train_s = last - t0
        recalibrate_batch_norm(model, train_set, bs, "cpu")
        model.eval()
        with torch.no_grad():
            for x, y in val_loader:
                F.binary_cross_entropy_with_logits(model(x), y)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, out / "bare.ckpt")
        if epoch >= 1:
            clock["train_s"].append(train_s)
            clock["epoch_s"].append(time.perf_counter() - t0)
    return clock


def ours(settings: dict, data: Path, run: Path) -> dict:
    clock = EpochClock(skip=1)
    fit(get_spec("ct_classifier"), data, run, settings, extra_callbacks=[clock])
    return {"train_s": clock.train_s, "epoch_s": clock.epoch_s, "steps": clock.steps, "waits": clock.waits}


def _wait_share(c: dict) -> float:
    return sum(c["waits"]) / max(1e-9, sum(c["waits"]) + sum(c["steps"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=24, help="phantoms per class")
    parser.add_argument("--shape", default="32,128,128", help="phantom shape z,y,x")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    shape = tuple(int(v) for v in args.shape.split(","))
    settings = {**get_spec("ct_classifier").preset_settings("quick"), "max_epochs": args.epochs,
                "early_stop_patience": 0, "device": "cpu"}
    prep = Preprocessing.from_settings(settings)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_ct_volumes(tmp, 0, args.volumes, shape, progress=lambda _m: None)
        data = tmp / "ct_nifti"
        load0 = os.getloadavg()[0]
        rates = bench_preprocessing(data, prep, tmp / "cache")
        print(f"\npreprocessing {2 * args.volumes} volumes {shape} -> {prep.shape}:")
        print(f"  uncached {rates['uncached']:8.1f} volumes/s   cached {rates['cached']:8.1f} volumes/s   "
              f"ratio {rates['cached'] / rates['uncached']:.1f}x")
        settings["cache_dir"] = str(tmp / "cache")
        dataset = discover(data)
        train = preprocess_cases(dataset.train, prep, tmp / "cache")
        val = preprocess_cases(dataset.val, prep, tmp / "cache")
        train_set = VolumeSet(train.files, [c.label for c in train.cases], preload=True)
        val_set = VolumeSet(val.files, [c.label for c in val.cases], preload=True)
        runs: dict[str, list[dict]] = {"ours": [], "bare": []}
        for r in range(args.repeats):
            runs["ours"].append(ours(settings, data, tmp / f"run{r}"))
            runs["bare"].append(bare_loop(settings, train_set, val_set, args.epochs, tmp))
        load1 = os.getloadavg()[0]
    med = {k: {m: statistics.median([statistics.median(c[m]) for c in v]) for m in ("train_s", "epoch_s")}
           for k, v in runs.items()}
    best = {k: {m: min(min(c[m]) for c in v) for m in ("train_s", "epoch_s")} for k, v in runs.items()}
    print(f"\ntraining, quick preset ({prep.shape}, batch {settings['batch_size']}, {len(train_set)} train / "
          f"{len(val_set)} val volumes), {args.repeats} x {args.epochs - 1} timed epochs:")
    print(f"  {'loop':6} {'train s':>8} {'epoch s':>8} {'best train':>10} {'wait %':>7}")
    for k in ("bare", "ours"):
        wait = statistics.median(_wait_share(c) for c in runs[k])
        print(f"  {k:6} {med[k]['train_s']:8.2f} {med[k]['epoch_s']:8.2f} {best[k]['train_s']:10.2f} "
              f"{100 * wait:6.1f}%")
    print(f"  train ratio (bare / ours): median {med['bare']['train_s'] / med['ours']['train_s']:.3f}, "
          f"best {best['bare']['train_s'] / best['ours']['train_s']:.3f}   "
          f"epoch ratio: median {med['bare']['epoch_s'] / med['ours']['epoch_s']:.3f}")
    print(f"  load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
