"""Training throughput: our Lightning engine vs a bare PyTorch loop, same model, data, batch and device.

Both loops do the same work per training step: the same dataset and DataLoader (batched
augmentation through LungBoxDataset.__getitems__), the same model, Smooth-L1 loss and Adam step,
and the loss summed on its device (no host sync per step). What is timed, per timed epoch:

  train      from the epoch's start (first batch fetch included) to the end of its last step;
             "train img/s" and "train ratio" count only this part;
  wait       share of the step cycle spent waiting between steps: for the bare loop the DataLoader's
             `next`, for ours the time between Lightning's batch hooks (loader plus loop bookkeeping);
  val        the validation pass (ours also computes the IoU distribution and logs it);
  ckpt+other everything else in the epoch: ours saves the best-k checkpoint (model + Adam state, with
             last.ckpt linked), writes metrics.jsonl / progress.json / TensorBoard and re-requests the
             loaders; the bare loop saves the same state with torch.save and steps the LR scheduler;
  epoch      train + val + ckpt+other; "epoch ratio" compares whole epochs.

Claims: train ratio >= 0.95 and our wait <= 10 % of the step cycle; on a CUDA GPU also a full-size
ResNet-50 localizer step (512 x 512, batch 8) in fp32 and in mixed precision. The loops run
alternately `--repeats` times (the machine may be shared): the table shows medians, with the spread
(min-max) of the paired ratios, the best run of each loop (interference only ever adds time, so
best-vs-best is the least disturbed comparison), every run, and the load average before and after.

Run: `.venv/bin/python -m bench.bench_train [--image-size 64 --batch-size 32 --epochs 3 --phantoms 48]`.
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
from torch.utils.data import DataLoader

from core.device import choose_device, default_precision
from core.models import get_spec
from core.models.lung_localizer.data import Augmentation, EpochShuffleSampler, LungBoxDataset, read_prepared
from core.models.lung_localizer.net import build_model, init_head_bias
from core.models.lung_localizer.synthetic import phantom_dataset
from core.models.lung_localizer.train import mean_box_px
from core.train.config import apply_overrides
from core.train.loop import fit


class EpochClock:
    """Per timed epoch: train seconds, validation seconds, whole-epoch seconds; per step: step and wait."""

    def __init__(self, skip_epochs: int) -> None:
        self.skip_epochs = skip_epochs
        self.steps: list[float] = []
        self.waits: list[float] = []
        self.images = 0
        self.train_s: list[float] = []
        self.val_s: list[float] = []
        self.epoch_s: list[float] = []
        self._epoch_start: float | None = None

    def timed(self, epoch: int) -> bool:
        return epoch >= self.skip_epochs

    def epoch_start(self, epoch: int, now: float) -> None:
        self.epoch_end(now)
        self._epoch_start = now if self.timed(epoch) else None

    def epoch_end(self, now: float) -> None:
        if self._epoch_start is not None:
            self.epoch_s.append(now - self._epoch_start)
            self._epoch_start = None

    def train_end(self, now: float) -> None:
        if self._epoch_start is not None:
            self.train_s.append(now - self._epoch_start)

    def summary(self) -> dict:
        train = sum(self.train_s)
        val = statistics.mean(self.val_s) if self.val_s else 0.0
        epoch = statistics.mean(self.epoch_s)
        mean_train = train / len(self.train_s)
        return {
            "images_per_s": self.images / train,
            "step_ms": 1000 * float(np.mean(self.steps)),
            "wait_share": _share(self.waits, self.steps),
            "train_s": mean_train,
            "val_s": val,
            "other_s": epoch - mean_train - val,
            "epoch_s": epoch,
        }


def _share(waits: list[float], steps: list[float]) -> float:
    # each wait precedes a step except the first of an epoch; compare like with like
    return float(np.mean(waits)) / (float(np.mean(waits)) + float(np.mean(steps))) if waits else 0.0


class StepTimer(pl.Callback):
    """The EpochClock fed from Lightning's hooks (added last: it sees the other callbacks' work)."""

    def __init__(self, skip_epochs: int) -> None:
        self.clock = EpochClock(skip_epochs)
        self._end: float | None = None
        self._start = 0.0
        self._val_start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._end = None
        self.clock.epoch_start(trainer.current_epoch, time.perf_counter())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        if self._end is not None and self.clock.timed(trainer.current_epoch):
            self.clock.waits.append(self._start - self._end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._end = time.perf_counter()
        if self.clock.timed(trainer.current_epoch):
            self.clock.steps.append(self._end - self._start)
            self.clock.images += int(batch[0].shape[0])

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()
        self.clock.train_end(self._end if self._end is not None else self._val_start)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.clock.timed(trainer.current_epoch):
            self.clock.val_s.append(time.perf_counter() - self._val_start)

    def on_train_end(self, trainer, pl_module) -> None:
        self.clock.epoch_end(time.perf_counter())


def run_lightning(data: Path, run_dir: Path, settings: dict, skip: int) -> dict:
    timer = StepTimer(skip)
    fit(get_spec("lung_localizer"), data, run_dir, settings, extra_callbacks=[timer])
    return timer.clock.summary()


def _augmentation(settings: dict) -> Augmentation | None:
    if not settings["augment"]:
        return None
    keys = ("aug_gamma", "aug_rotate_deg", "aug_scale", "aug_translate")
    return Augmentation(*(float(settings[k]) for k in keys))


def _bare_loaders(data: Path, settings: dict, device: str, epoch: dict) -> tuple[DataLoader, DataLoader]:
    """The engine's datasets and loader settings (see core.models.lung_localizer.train.LungDataModule)."""
    prepared = read_prepared(data)
    size, seed = int(settings["image_size"]), int(settings["seed"])
    aug = _augmentation(settings)
    train_set = LungBoxDataset(prepared.train, size, prepared.mean, prepared.std, aug, seed)
    val_set = LungBoxDataset(prepared.val, size, prepared.mean, prepared.std, None, seed)
    train_set.preload()  # as LungDataModule.setup
    val_set.preload()
    workers = int(settings["num_workers"])
    kwargs = {
        "batch_size": int(settings["batch_size"]),
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": device.startswith("cuda"),
    }
    train_loader = DataLoader(
        train_set,
        sampler=EpochShuffleSampler(len(train_set), seed, lambda: epoch["now"]),
        drop_last=len(train_set) > kwargs["batch_size"],
        **kwargs,
    )
    return train_loader, DataLoader(val_set, **kwargs)


def _bare_train_epoch(
    model, optimizer, loader: DataLoader, device: str, clock: EpochClock, timed: bool
) -> float:
    """One epoch of steps; returns the mean loss (summed on the device as RunFiles does, read once)."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_steps, end = 0, None
    iterator = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            x, boxes = next(iterator)
        except StopIteration:
            break
        t1 = time.perf_counter()
        x, boxes = x.to(device, non_blocking=True), boxes.to(device, non_blocking=True)
        loss = torch.nn.functional.smooth_l1_loss(model(x), boxes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().to(torch.float64)
        n_steps += 1
        if timed:
            if end is not None:  # as for ours: no wait counted before an epoch's first step
                clock.waits.append(t1 - t0)
            clock.steps.append(time.perf_counter() - t1)
            clock.images += x.shape[0]
        end = time.perf_counter()
    clock.train_end(end if end is not None else time.perf_counter())
    return float(loss_sum) / max(n_steps, 1)


def _bare_validate(model, loader: DataLoader, device: str) -> float:
    model.eval()
    with torch.no_grad():
        losses = [
            torch.nn.functional.smooth_l1_loss(model(x.to(device)), b.to(device)).item() for x, b in loader
        ]
    return float(np.mean(losses))


def run_bare(data: Path, run_dir: Path, settings: dict, skip: int) -> dict:
    """The same model, data, sampler, batch, optimiser, loss, validation and checkpoint, written by hand."""
    device = choose_device(settings["device"])
    pl.seed_everything(int(settings["seed"]), workers=True, verbose=False)
    torch.use_deterministic_algorithms(bool(settings["deterministic"]), warn_only=True)  # as the engine
    epoch = {"now": 0}
    train_loader, val_loader = _bare_loaders(data, settings, device, epoch)
    size = int(settings["image_size"])
    model = build_model(settings["backbone"], size, settings["dropout"]).to(device)
    init_head_bias(model, mean_box_px(read_prepared(data), size))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, "min", settings["lr_factor"], settings["lr_patience"]
    )
    clock = EpochClock(skip)
    run_dir.mkdir(parents=True, exist_ok=True)
    for epoch["now"] in range(int(settings["max_epochs"])):
        clock.epoch_start(epoch["now"], time.perf_counter())
        timed = clock.timed(epoch["now"])
        _bare_train_epoch(model, optimizer, train_loader, device, clock, timed)
        val_start = time.perf_counter()
        val_loss = _bare_validate(model, val_loader, device)
        if timed:
            clock.val_s.append(time.perf_counter() - val_start)
        _save_checkpoint(run_dir / "last.pt", model, optimizer, epoch["now"])
        scheduler.step(val_loss)
    clock.epoch_end(time.perf_counter())
    return clock.summary()


def _save_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int
) -> None:
    """What a resumable bare loop saves each epoch: weights and optimiser state, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, path)


def gpu_full_size(steps: int = 10) -> list[tuple[str, float]]:
    """ResNet-50 localizer at 512 x 512, batch 8: ms per training step, fp32 vs mixed precision."""
    device = "cuda"
    out = []
    for precision in ("32-true", default_precision(device)):
        model = build_model("resnet50", 512).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.randn(8, 1, 512, 512, device=device)
        boxes = torch.rand(8, 4, device=device) * 512
        dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        scaler = torch.amp.GradScaler(enabled=precision == "16-mixed")
        for i in range(steps + 3):
            if i == 3:
                torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype, enabled=precision != "32-true"):
                loss = torch.nn.functional.smooth_l1_loss(model(x).float(), boxes)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        torch.cuda.synchronize()
        out.append((precision, 1000 * (time.perf_counter() - start) / steps))
    return out


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def _row(name: str, runs: list[dict]) -> str:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return (
        f"{name:<24}{max(r['images_per_s'] for r in runs):>8.1f}{med['images_per_s']:>8.1f}"
        f"{med['step_ms']:>9.1f}{med['wait_share']:>7.1%}{med['val_s']:>7.2f}{med['other_s']:>7.2f}"
        f"{min(r['epoch_s'] for r in runs):>8.2f}{med['epoch_s']:>8.2f}"
    )


def print_runs(runs: dict[str, list[dict]]) -> None:
    print("\nrun  loop   img/s  step ms   wait  val s  ckpt+other s  epoch s")
    for k, (bare, ours) in enumerate(zip(runs["bare"], runs["ours"], strict=True)):
        for name, r in (("bare", bare), ("ours", ours)):
            print(
                f"{k:>3}  {name:<5}{r['images_per_s']:>7.1f}{r['step_ms']:>9.1f}{r['wait_share']:>7.1%}"
                f"{r['val_s']:>7.2f}{r['other_s']:>14.2f}{r['epoch_s']:>9.2f}"
            )


def print_table(args: argparse.Namespace, n_train: int, runs: dict[str, list[dict]], load: list) -> None:
    device = choose_device()
    bare, ours = runs["bare"], runs["ours"]
    pairs = list(zip(bare, ours, strict=True))
    ratios = [o["images_per_s"] / b["images_per_s"] for b, o in pairs]
    epoch_ratios = [b["epoch_s"] / o["epoch_s"] for b, o in pairs]
    best = max(o["images_per_s"] for o in ours) / max(b["images_per_s"] for b in bare)
    best_epoch = min(b["epoch_s"] for b in bare) / min(o["epoch_s"] for o in ours)
    print(
        f"\nlung localizer {args.backbone} {args.image_size}px, batch {args.batch_size}, {n_train} training "
        f"slices, {args.epochs - 1} timed epochs x {args.repeats} runs per loop (alternating), device "
        f"{device} ({default_precision(device)}, {torch.get_num_threads()} threads), workers {args.workers}, "
        f"augment on; load average {load[0][0]:.1f} before, {load[1][0]:.1f} after ({os.cpu_count()} CPUs)"
    )
    print(
        f"{'':<24}{'train img/s':>16}{'step':>9}{'wait':>7}{'val':>7}{'ckpt+':>7}{'epoch s':>16}\n"
        f"{'loop':<24}{'best':>8}{'median':>8}{'ms':>9}{'':>7}{'s/ep':>7}{'other':>7}{'best':>8}{'median':>8}"
    )
    print(_row("bare PyTorch", bare))
    print(_row("Lightning (core.train)", ours))
    print(
        f"train ratio (ours/bare img/s): best vs best {best:.2f}x, paired runs {_spread(ratios)}\n"
        f"epoch ratio (bare/ours epoch s): best vs best {best_epoch:.2f}x, "
        f"paired runs {_spread(epoch_ratios)}\n"
        "step ms, wait, val and ckpt+other are medians over runs; train img/s counts training batches only.\n"
        "targets: train ratio >= 0.95x bare; our wait <= 10% of the step cycle"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up and not timed")
    parser.add_argument("--phantoms", type=int, default=48, help="48 phantoms: 528 training slices")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per loop, alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both loops (0: torch's)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    settings = apply_overrides(
        get_spec("lung_localizer"),
        [
            f"backbone={args.backbone}",
            f"image_size={args.image_size}",
            f"batch_size={args.batch_size}",
            f"max_epochs={args.epochs}",
            f"num_workers={args.workers}",
            "pretrained=false",
            "lr=1e-3",
            "save_top_k=1",
        ],
    )
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        data = phantom_dataset(
            Path(tmp) / "prepared", range(args.phantoms), range(100, 104), size=args.image_size
        )
        n_train = len(read_prepared(data).train)
        runs: dict[str, list[dict]] = {"bare": [], "ours": []}
        for k in range(args.repeats):  # alternate: the machine may be shared
            first, second = ("bare", "ours") if k % 2 == 0 else ("ours", "bare")
            for name in (first, second):
                run_dir = Path(tmp) / f"{name}{k}"
                runs[name].append(
                    run_bare(data, run_dir, settings, skip=1)
                    if name == "bare"
                    else run_lightning(data, run_dir, settings, skip=1)
                )
    load.append(os.getloadavg())
    print_runs(runs)
    print_table(args, n_train, runs, load)
    if choose_device() == "cuda":
        rows = gpu_full_size()
        print(f"\nResNet-50 localizer, 512x512, batch 8, {torch.cuda.get_device_name(0)}")
        print(f"{'precision':<14}{'ms/step':>10}{'speed-up':>10}")
        for precision, ms in rows:
            print(f"{precision:<14}{ms:>10.1f}{rows[0][1] / ms:>9.2f}x")


if __name__ == "__main__":
    main()
