"""Training throughput: our Lightning engine vs a bare PyTorch loop, same model, data, batch and device.

Claims measured (one run, same machine):
  * Lightning engine throughput >= 0.95x the bare loop (images per second over the timed epochs,
    validation, checkpoints and run files included on our side);
  * data-loader wait <= 10 % of the step time in our engine;
  * on a CUDA GPU: a full-size ResNet-50 localizer step (512 x 512, batch 8) in fp32 and in
    mixed precision.

Run: `.venv/bin/python -m bench.bench_train [--image-size 64 --batch-size 32 --epochs 3 --phantoms 24]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from core.device import choose_device, default_precision
from core.models import get_spec
from core.models.lung_localizer import build_model, init_head_bias
from core.train.config import apply_overrides
from core.train.data_lung import Augmentation, EpochShuffleSampler, LungBoxDataset, read_prepared
from core.train.loop import fit
from core.train.lung import mean_box_px
from core.train.synthetic import phantom_dataset


class StepTimer(pl.Callback):
    """Per training batch: the step (start -> end of batch hooks) and the wait before it (loader + loop)."""

    def __init__(self, skip_epochs: int) -> None:
        self.skip_epochs = skip_epochs
        self.steps: list[float] = []
        self.waits: list[float] = []
        self._end: float | None = None
        self._start = 0.0
        self.timed_start: float | None = None
        self.timed_end = 0.0
        self.images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._end = None
        if trainer.current_epoch == self.skip_epochs and self.timed_start is None:
            self.timed_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        if self._end is not None and trainer.current_epoch >= self.skip_epochs:
            self.waits.append(self._start - self._end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._end = time.perf_counter()
        if trainer.current_epoch >= self.skip_epochs:
            self.steps.append(self._end - self._start)
            self.images += int(batch[0].shape[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.timed_end = time.perf_counter()


def run_lightning(data: Path, run_dir: Path, settings: dict, skip: int) -> dict:
    timer = StepTimer(skip)
    fit(get_spec("lung_localizer"), data, run_dir, settings, extra_callbacks=[timer])
    seconds = timer.timed_end - (timer.timed_start or timer.timed_end)
    return {
        "images_per_s": timer.images / seconds,
        "seconds": seconds,
        "step_ms": 1000 * float(np.mean(timer.steps)),
        "wait_share": _share(timer.waits, timer.steps),
    }


def _share(waits: list[float], steps: list[float]) -> float:
    # each wait precedes a step except the first of an epoch; compare like with like
    return float(np.mean(waits)) / (float(np.mean(waits)) + float(np.mean(steps))) if waits else 0.0


def run_bare(data: Path, settings: dict, skip: int) -> dict:
    """The same model, data, sampler, batch, optimiser, loss and validation, written by hand."""
    device = choose_device(settings["device"])
    pl.seed_everything(int(settings["seed"]), workers=True, verbose=False)
    torch.use_deterministic_algorithms(bool(settings["deterministic"]), warn_only=True)  # as the engine
    prepared = read_prepared(data)
    size, seed = int(settings["image_size"]), int(settings["seed"])
    aug = (
        Augmentation(
            settings["aug_gamma"],
            settings["aug_rotate_deg"],
            settings["aug_scale"],
            settings["aug_translate"],
        )
        if settings["augment"]
        else None
    )
    train_set = LungBoxDataset(prepared.train, size, prepared.mean, prepared.std, aug, seed)
    val_set = LungBoxDataset(prepared.val, size, prepared.mean, prepared.std, None, seed)
    epoch = {"now": 0}
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
    val_loader = DataLoader(val_set, **kwargs)
    model = build_model(settings["backbone"], size, settings["dropout"]).to(device)
    init_head_bias(model, mean_box_px(prepared, size))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, "min", settings["lr_factor"], settings["lr_patience"]
    )
    steps, waits, images, start = [], [], 0, None
    for epoch["now"] in range(int(settings["max_epochs"])):
        if epoch["now"] == skip:
            start = time.perf_counter()
        model.train()
        iterator = iter(train_loader)
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
            loss.detach().item()  # our engine reads the loss each step too
            t2 = time.perf_counter()
            if epoch["now"] >= skip:
                waits.append(t1 - t0)
                steps.append(t2 - t1)
                images += x.shape[0]
        model.eval()
        with torch.no_grad():
            val = [
                torch.nn.functional.smooth_l1_loss(model(x.to(device)), b.to(device)).item()
                for x, b in val_loader
            ]
        scheduler.step(float(np.mean(val)))
    seconds = time.perf_counter() - start
    return {
        "images_per_s": images / seconds,
        "seconds": seconds,
        "step_ms": 1000 * float(np.mean(steps)),
        "wait_share": _share(waits, steps),
    }


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up and not timed")
    parser.add_argument("--phantoms", type=int, default=24)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs each, alternating")
    args = parser.parse_args(argv)
    device = choose_device()
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
    with tempfile.TemporaryDirectory() as tmp:
        data = phantom_dataset(
            Path(tmp) / "prepared", range(args.phantoms), range(100, 104), size=args.image_size
        )
        n_train = len(read_prepared(data).train)
        runs: dict[str, list[dict]] = {"bare": [], "ours": []}
        for k in range(args.repeats):  # alternate, keep the best of each: the machine is shared
            runs["bare"].append(run_bare(data, settings, skip=1))
            runs["ours"].append(run_lightning(data, Path(tmp) / f"run{k}", settings, skip=1))
        bare = max(runs["bare"], key=lambda r: r["images_per_s"])
        ours = max(runs["ours"], key=lambda r: r["images_per_s"])
    print(
        f"\nlung localizer {args.backbone} {args.image_size}px, batch {args.batch_size}, {n_train} training "
        f"slices, {args.epochs - 1} timed epochs, device {device} ({default_precision(device)}), "
        f"workers {args.workers}, augment on"
    )
    print(f"{'loop':<22}{'images/s':>10}{'step ms':>10}{'loader wait':>13}{'ratio':>8}")
    for name, row in (("bare PyTorch", bare), ("Lightning (core.train)", ours)):
        ratio = row["images_per_s"] / bare["images_per_s"]
        print(
            f"{name:<22}{row['images_per_s']:>10.1f}{row['step_ms']:>10.1f}{row['wait_share']:>12.1%}"
            f"{ratio:>8.2f}x"
        )
    print("targets: Lightning >= 0.95x bare; loader wait <= 10% of step time")
    if device == "cuda":
        rows = gpu_full_size()
        print(f"\nResNet-50 localizer, 512x512, batch 8, {torch.cuda.get_device_name(0)}")
        print(f"{'precision':<14}{'ms/step':>10}{'speed-up':>10}")
        for precision, ms in rows:
            print(f"{precision:<14}{ms:>10.1f}{rows[0][1] / ms:>9.2f}x")


if __name__ == "__main__":
    main()
