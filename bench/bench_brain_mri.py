"""Brain MRI grade training: an epoch of our engine vs a bare PyTorch loop, same model, data, batch, device.

Both loops train the 4-channel ResNet-18 on the same prepared tumour slices (the family's
`prepare_slices` cache, memory-mapped float16), with the same DataLoader settings, per-batch
flips, cross-entropy and Adam. Timed per epoch after a warm-up epoch:

  train   from the epoch's first batch fetch to the end of its last optimiser step;
  wait    share of the step cycle spent between steps (bare: the DataLoader's `next`; ours: the time
          between Lightning's batch hooks, loader plus loop bookkeeping).

Claims: train ratio (bare / ours) >= 0.95 and our wait <= 10 % of the step cycle. The loops run
alternately `--repeats` times (the machine may be shared); medians and the best run of each are shown,
with the load average before and after.

Run: `.venv/bin/python -m bench.bench_brain_mri [--patients 16 --image-size 64 --batch-size 16 --epochs 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from core.device import choose_device
from core.models import get_spec
from core.models.brain_mri.data import SliceDataset, index_brats, prepare_slices, split_patients
from core.models.brain_mri.demo import write_brats
from core.models.brain_mri.net import build_model
from core.models.brain_mri.train import flip_batch
from core.train.loop import fit


class EpochClock(pl.Callback):
    """Our loop: per timed epoch the train seconds and the waits between steps."""

    def __init__(self, skip: int = 1) -> None:
        self.skip, self.train_s, self.wait_s, self.cycle_s = skip, [], [], []
        self._start = self._end = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = self._end = time.perf_counter()
        self._wait = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._wait += time.perf_counter() - self._end

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch >= self.skip:
            self.train_s.append(self._end - self._start)
            self.wait_s.append(self._wait)


def bare_epochs(train: SliceDataset, settings: dict, epochs: int, device: str) -> tuple[list, list]:
    torch.manual_seed(int(settings["seed"]))
    model = build_model(image_size=int(settings["image_size"])).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=float(settings["lr"]))
    loader = DataLoader(
        train,
        batch_size=int(settings["batch_size"]),
        shuffle=True,
        drop_last=True,
        num_workers=int(settings["num_workers"]),
        persistent_workers=int(settings["num_workers"]) > 0,
    )
    train_s, wait_s = [], []
    for epoch in range(epochs + 1):
        start = end = time.perf_counter()
        wait, total = 0.0, None
        iterator = iter(loader)
        while True:
            try:
                x, y, _ = next(iterator)
            except StopIteration:
                break
            wait += time.perf_counter() - end
            x, y = flip_batch(x.to(device)), y.to(device)
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total = loss.detach() if total is None else total + loss.detach()
            end = time.perf_counter()
        float(total)
        if epoch >= 1:
            train_s.append(end - start)
            wait_s.append(wait)
    return train_s, wait_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--shape", default="32x80x80")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per run (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    spec = get_spec("brain_mri")
    device = choose_device("auto")
    settings = spec.preset_settings("quick") | {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "max_epochs": args.epochs + 1,
        "val_fraction": 0.25,
    }
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_brats(root / "data", args.patients, tuple(int(s) for s in args.shape.split("x")), seed=0)
        started = time.perf_counter()
        prepared, _ = prepare_slices(index_brats(root / "data"), root / "slices", args.image_size, 1)
        prepare_s = time.perf_counter() - started
        by_id = {p.patient.patient_id: p for p in prepared}
        train_p, _ = split_patients([p.patient for p in prepared], 0.25, int(settings["seed"]))
        train = SliceDataset([by_id[p.patient_id] for p in train_p])
        ours, bare = [], []
        for repeat in range(args.repeats):
            clock = EpochClock()
            fit(spec, root / "data", root / f"run{repeat}", settings, extra_callbacks=[clock])
            ours.append(clock)
            bare.append(bare_epochs(train, settings, args.epochs, device))
    steps = len(train) // args.batch_size
    our_train = [t for c in ours for t in c.train_s]
    our_wait = [w / t for c in ours for w, t in zip(c.wait_s, c.train_s, strict=True)]
    bare_train = [t for b in bare for t in b[0]]
    bare_wait = [w / t for b in bare for w, t in zip(b[1], b[0], strict=True)]
    print(
        f"brain_mri on {device}: {args.patients} phantoms {args.shape}, {len(train)} training slices at "
        f"{args.image_size}^2, batch {args.batch_size} ({steps} steps/epoch); prepare {prepare_s:.2f} s "
        f"({args.patients / prepare_s:.1f} patients/s)"
    )
    print(f"{'loop':<8}{'train s (median)':>18}{'best':>8}{'wait share':>12}")
    print(
        f"{'bare':<8}{statistics.median(bare_train):>18.3f}{min(bare_train):>8.3f}"
        f"{statistics.median(bare_wait):>12.1%}"
    )
    print(
        f"{'ours':<8}{statistics.median(our_train):>18.3f}{min(our_train):>8.3f}"
        f"{statistics.median(our_wait):>12.1%}"
    )
    ratio = statistics.median(bare_train) / statistics.median(our_train)
    print(
        f"train ratio bare/ours: median {ratio:.3f}, best-vs-best {min(bare_train) / min(our_train):.3f} "
        f"(claim >= 0.95); our wait {statistics.median(our_wait):.1%} (claim <= 10 %); "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
