"""Two-stage VNet: inference time and peak memory on a reference-size volume, training throughput vs a bare
PyTorch loop.

(1) Inference: `core.models.vnet.stages.segment_volume` on a 96x640x640 volume with the reference networks
(width 8, 4 levels, 5x5x5: 11.4 M parameters each), pad 96x640x640, crop 96x144x224, locator scale
0.5,0.25,0.25, buffer 30. Untrained weights find nothing, so the locator here is the real network timed on
its input, and its box is then fixed to a reference-sized structure (so the segmenter runs once on one
crop, as with a trained locator). Peak memory: the process's peak RSS growth (CPU) or
torch.cuda.max_memory_allocated (GPU). Targets: <= 60 s on a CPU, <= 1 s on a GPU.

(2) Training: steps/s of the engine (core.train.loop.fit, Lightning, the family's data module) vs a bare
loop (same network, loss, optimiser, batches from the same dataset), and the loader's share of the bare
loop's step time. Target ratio >= 0.95, loader share <= 10 %.

    .venv/bin/python -m bench.bench_vnet [--size 96,640,640] [--crop 96,144,224] [--device auto]
        [--skip-train]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_inference(size: tuple[int, int, int], crop: tuple[int, int, int], device: str) -> dict:
    import monai.inferers  # noqa: F401  (imported before timing: a first import costs seconds)

    from core.models.vnet import stages
    from core.models.vnet.net import TwoStage

    args = {"width": 8, "levels": 4, "kernel_size": 5}
    model = TwoStage(args, args).to(device).eval()
    description = {
        "pad_size": list(size),
        "crop_size": list(crop),
        "locator_scale": [0.5, 0.25, 0.25],
        "buffer": 30,
    }
    image = np.random.default_rng(0).random(size, dtype=np.float32)
    structure = tuple(max(1, c - 60) for c in crop)  # a located box that fills the crop once widened
    lo = tuple((s - e) // 2 for s, e in zip(size, structure, strict=True))
    box = (lo, tuple(lo_ + e - 1 for lo_, e in zip(lo, structure, strict=True)))
    real_locate = stages.locate
    timings: dict[str, float] = {}

    def locate(net, padded, scale, dev, threshold=0.5):
        t0 = time.perf_counter()
        _, low = real_locate(net, padded, scale, dev, threshold)  # the real network on its real input
        _sync(dev)
        timings["locator_s"] = time.perf_counter() - t0
        return box, low

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_mb()
    stages.locate = locate
    try:
        with torch.no_grad():
            segment = stages.segment_volume  # warm-up on GPU (cuDNN autotune), not timed
            if device.startswith("cuda"):
                segment(model, image, description, device)
            t0 = time.perf_counter()
            result = segment(model, image, description, device)
            _sync(device)
            total = time.perf_counter() - t0
    finally:
        stages.locate = real_locate
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb() - rss_before
    return {
        "total_s": total,
        "locator_s": timings.get("locator_s", float("nan")),
        "mask": result.mask.shape,
        "sliding": result.sliding_window,
        "peak_mb": peak,
    }


def _phantom_set(folder: Path, n: int = 6) -> Path:
    from core.io.writers import write_nrrd
    from core.models.vnet.demo import atrium_phantom

    for i in range(n):
        ph = atrium_phantom((32, 64, 64), (1.5, 1.0, 1.0), 500 + i)
        write_nrrd(np.rint(ph.image).astype(np.uint8), folder / f"c{i}" / "image.nrrd", spacing=ph.spacing)
        write_nrrd(ph.label * 255, folder / f"c{i}" / "label.nrrd", spacing=ph.spacing)
    return folder


def bench_training(device: str, epochs: int = 4) -> dict:
    import pytorch_lightning as pl

    from core.models import get_spec
    from core.models.vnet.train import make_training
    from core.train.loop import fit

    spec = get_spec("vnet")
    settings = {
        **spec.preset_settings("quick"),
        "locator_epochs": 2,
        "max_epochs": epochs,
        "device": "cuda" if device.startswith("cuda") else "cpu",
        "augment": True,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = _phantom_set(Path(tmp) / "data")

        class StepTimer(pl.Callback):
            def __init__(self) -> None:
                self.steps, self.seconds, self._t = 0, 0.0, 0.0

            def on_train_epoch_start(self, trainer, module) -> None:
                self._t = self._last = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                self._last = time.perf_counter()

            def on_train_epoch_end(self, trainer, module) -> None:
                # first batch fetched .. last step done: like the bare loop (validation, checkpoints excluded)
                if trainer.current_epoch > 0:  # the first epoch warms up
                    self.seconds += self._last - self._t
                    self.steps += trainer.num_training_batches

        timer = StepTimer()
        fit(spec, data, Path(tmp) / "run", settings, extra_callbacks=[timer])
        engine = timer.steps / timer.seconds

        pl.seed_everything(0, verbose=False)
        module, datamodule = make_training(settings, data, Path(tmp) / "bare")
        net = module.model.segmenter.to(device).train()
        optimizer = torch.optim.Adam(net.parameters(), lr=float(settings["lr"]))
        loader = torch.utils.data.DataLoader(
            datamodule.train_set, batch_size=int(settings["batch_size"]), shuffle=True, drop_last=True
        )
        steps, load_s, total_s = 0, 0.0, 0.0
        for epoch in range(epochs):
            t_epoch = time.perf_counter()
            t_load = time.perf_counter()
            for batch in loader:
                loaded = time.perf_counter()
                x, y = batch["image"].to(device), batch["label"].to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = module.loss_fn(net(x), y)
                loss.backward()
                optimizer.step()
                _sync(device)
                if epoch > 0:
                    load_s += loaded - t_load
                    steps += 1
                t_load = time.perf_counter()
            if epoch > 0:
                total_s += time.perf_counter() - t_epoch
        bare = steps / total_s
    return {
        "engine_steps_s": engine,
        "bare_steps_s": bare,
        "ratio": engine / bare,
        "loader_share": load_s / total_s,
    }


def main() -> None:
    from core.device import choose_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="96,640,640")
    parser.add_argument("--crop", default="96,144,224")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    device = choose_device(args.device)
    size = tuple(int(v) for v in args.size.split(","))
    crop = tuple(int(v) for v in args.crop.split(","))
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    inf = bench_inference(size, crop, device)  # type: ignore[arg-type]
    target = 1.0 if device.startswith("cuda") else 60.0
    print(
        f"{'inference':<12} {'volume':>14} {'total s':>8} {'locator s':>9} {'peak MB':>8} {'target s':>8} "
        f"{'ratio':>6}"
    )
    print(
        f"{'two-stage':<12} {'x'.join(map(str, size)):>14} {inf['total_s']:8.2f} {inf['locator_s']:9.2f} "
        f"{inf['peak_mb']:8.0f} {target:8.1f} {inf['total_s'] / target:6.2f}"
    )
    if args.skip_train:
        return
    tr = bench_training(device)
    print(f"\n{'training':<12} {'engine st/s':>11} {'bare st/s':>9} {'ratio':>6} {'loader share':>12}")
    print(
        f"{'quick crops':<12} {tr['engine_steps_s']:11.2f} {tr['bare_steps_s']:9.2f} {tr['ratio']:6.2f} "
        f"{tr['loader_share']:12.1%}"
    )


if __name__ == "__main__":
    main()
