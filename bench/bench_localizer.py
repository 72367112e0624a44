"""Does the lung localizer find lungs, or the place lungs usually are? (issue 9, item 4)

Two directions, each trained through the product's training path (`core.train.cli.train_from_cli`,
quick preset, ResNet-18 from scratch, CPU) and scored by mean IoU on slices whose lungs are wider
than 0.3 of the image:

(a) phantoms -> LIDC: train on the demo data set's chest CT phantoms (`core.demo`'s seeds and sizes,
    ground-truth boxes; one phantom held out for validation), score on the real LIDC-IDRI-0001
    (/work/data/lidc or $SLICEWISE_LIDC) against its HU-rule boxes (`core.propose.propose_volume`).
    Also scored on phantoms placed at shifted and scaled positions (in-domain generalisation).
(b) LIDC -> shifted phantoms: train on LIDC-IDRI-0001's slices with their HU-rule boxes as labels
    (validation: a block of the top slices, 2 slices left out between), score on new phantoms shrunk
    to 0.6-1.0 of the field and placed at random positions.

Rows per direction: the constant mean training box (baseline), then each head (reference: pooled
features -> 4 numbers; profile: which columns / rows the box covers) with the old narrow
augmentation (SPEC reference values: ±8 % shift, 0.9-1.1 scale, ±10°, gamma) and the wide one
(±25 % shift, 0.7-1.3 scale, ±5°, flips, window jitter, noise); the `quick` preset is the profile
head with the wide augmentation. "x old" = IoU / IoU of the reference head with narrow augmentation.
Pseudo-labels, measured separately in direction (a): only every 4th lung slice of each training
phantom keeps its box ("confirmed"), with and without HU-rule pseudo-labels (weight 0.3) on the others.
The scored volume never enters training. Ratios are against the mean box measured in the same run.

    .venv/bin/python -m bench.bench_localizer [--epochs-a 20] [--epochs-b 100] [--size 96]
        [--threads 2] [--skip-pseudo] [--only a|b] [--heads regress,profile] [--seed 0]
        [--b-val top|spread] [--a-monitor|--b-monitor val_loss|val_iou]

In (b) each trained model is scored twice: the checkpoint chosen by the monitored validation metric and
the last one.

Measured 2026-11-30 (96 px, 1 thread, 2 shared cores at load 3-7; seeds 0 / 1):
  pseudo-labels, (a) on LIDC (mean box 0.529): 76 confirmed only 0.825 / 0.826 (80 epochs, same step
  count); + 215 rule pseudo-labels at weight 0.3: 0.865 / 0.838 (20 epochs). Phantoms (a'): 0.895 / 0.921
  without, 0.918 / 0.904 with (no consistent effect).
  (b) LIDC -> shifted phantoms, quick, 40 epochs (mean box 0.418): top block + best val_loss (the product)
  0.763 / 0.785, its last checkpoint 0.712 / 0.770; top block + best val_iou 0.763 (seed 0); top and
  middle blocks + best val_loss 0.796 / 0.797, last 0.688 / 0.793; top and middle blocks + best val_iou
  0.806 / 0.804. (a) quick, 20 epochs, best val_iou (held-out phantom): 0.862 on LIDC, 0.916 on phantoms
  (seed 0; best val_loss earlier: 0.841).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MIN_WIDTH = 0.3
LIDC = Path(os.environ.get("SLICEWISE_LIDC", "/work/data/lidc"))


def _iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    from core.models.lung_localizer.train import box_iou

    return box_iou(torch.as_tensor(pred, dtype=torch.float32),
                   torch.as_tensor(truth, dtype=torch.float32)).numpy()


def _wide(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) > MIN_WIDTH


# (row label, head, wide augmentation): the old reference first (the baseline of "x old")
VARIANTS = (
    ("reference head, narrow aug (old)", "regress", False),
    ("reference head, wide aug", "regress", True),
    ("profile head, narrow aug", "profile", False),
    ("profile head, wide aug (quick)", "profile", True),
)


def _settings(size: int, epochs: int, wide: bool, seed: int = 0, head: str = "") -> list[str]:
    from core.models import get_spec
    from core.models.lung_localizer.spec import WIDE_AUGMENTATION

    spec = get_spec("lung_localizer")
    aug = WIDE_AUGMENTATION if wide else {k: spec.defaults[k] for k in WIDE_AUGMENTATION}
    values = {"pretrained": False, "image_size": size, "prepare_size": size, "batch_size": 32, "lr": 1e-3,
              "max_epochs": epochs, "save_top_k": 1, "num_workers": 0, "seed": seed, **aug,
              **({"head": head} if head else {})}
    return [f"{k}={v}" for k, v in values.items()]


def _train(prepared: Path, run: Path, settings: list[str], monitor: str = ""):
    """Trains through the product's CLI path; `monitor` ("val_iou") swaps the family's checkpoint
    metric for this run only (a measurement: the family itself keeps its spec)."""
    from core.infer import load_predictor
    from core.models import get_spec
    from core.train.cli import train_from_cli

    spec = get_spec("lung_localizer")
    saved = (spec.monitor, spec.monitor_mode)
    if monitor:
        object.__setattr__(spec, "monitor", monitor)
        object.__setattr__(spec, "monitor_mode", "max" if "iou" in monitor else "min")
    start = time.perf_counter()
    try:
        train_from_cli("lung_localizer", prepared, run, settings, preset="quick")
    finally:
        object.__setattr__(spec, "monitor", saved[0])
        object.__setattr__(spec, "monitor_mode", saved[1])
    seconds = time.perf_counter() - start
    return load_predictor(run, device="cpu"), seconds


def _last(run: Path):
    """The predictor of the run's last checkpoint (not the best by the monitored metric)."""
    from core.infer import load_predictor

    return load_predictor(run / "checkpoints" / "last.ckpt", device="cpu")


def spread_block_split(n_rows: int, val_fraction: float, gap: int = 2) -> list[str]:
    """Validation as two blocks: half at the top of the stack (as `slice_block_split`) and half in the
    middle, `gap` slices left out on each side of each block; the rest train."""
    n_val = max(2, round(val_fraction * n_rows))
    top, mid = n_val // 2, n_val - n_val // 2
    out = ["train"] * n_rows
    for i in range(n_rows - top, n_rows):
        out[i] = "val"
    for i in range(n_rows - top - gap, n_rows - top):
        out[i] = "gap"
    start = max(gap, (n_rows - top - gap) // 2 - mid // 2)
    for i in range(start - gap, start + mid + gap):
        out[i] = "val" if start <= i < start + mid else "gap"
    return out


def _predict(predictor, hu: np.ndarray) -> np.ndarray:
    from core.volume import Volume

    volume = Volume(np.asarray(hu, np.float32), spacing=(2.5, 0.7, 0.7), modality="CT")
    return predictor.predict_volume(volume)


def lidc_slices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hu (z, y, x), rule boxes (z, 4) fractions, z indices) of LIDC-IDRI-0001's slices with a rule box."""
    from core.io import load_volume
    from core.propose import propose_volume

    volume = load_volume(LIDC)
    boxes = propose_volume(volume)
    zs = np.array(sorted(boxes))
    return volume.array[zs], np.array([boxes[z] for z in zs], np.float32), zs


def shifted_phantoms(seeds: range, matrix: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Phantom lung slices shrunk to 0.6-1.0 of the field at random positions: (hu, boxes)."""
    from core.models.lung_localizer.synthetic import placed_phantom_slices

    groups = [placed_phantom_slices(s, matrix, depth=24, zoom=(0.6, 1.0)) for s in seeds]
    return np.concatenate([g.hu for g in groups]), np.concatenate([g.boxes for g in groups])


def _row(rows: list[dict], direction: str, model: str, ious: np.ndarray, seconds: float | None,
         n_train: int) -> None:
    rows.append({"direction": direction, "model": model, "iou": float(ious.mean()),
                 "p10": float(np.quantile(ious, 0.1)), "ge08": float((ious >= 0.8).mean()),
                 "seconds": seconds, "n_train": n_train, "n": len(ious)})
    took = f", trained in {seconds:.0f} s" if seconds is not None else ""
    print(f"[{direction}] {model}: mean IoU {ious.mean():.3f} on {len(ious)} slices{took}", flush=True)


def _variants(args) -> list[tuple[str, str, bool]]:
    heads = args.heads.split(",")
    chosen = {int(i) for i in args.variants.split(",") if i.strip()} or set(range(len(VARIANTS)))
    return [v for i, v in enumerate(VARIANTS) if v[1] in heads and i in chosen]


def direction_a(work: Path, args, rows: list[dict], lidc, phantoms_test) -> None:
    from core.models.lung_localizer.synthetic import demo_chest_phantoms, slices_of, write_prepared
    from core.propose import propose_volume

    lidc_hu, lidc_boxes, _ = lidc
    keep = _wide(lidc_boxes)
    lidc_hu, lidc_boxes = lidc_hu[keep], lidc_boxes[keep]
    ph_hu, ph_boxes = phantoms_test
    cases = demo_chest_phantoms(8)
    train = [slices_of(p.hu, p.boxes, cid) for cid, p in cases[:-1]]
    val = [slices_of(p.hu, p.boxes, cid) for cid, p in cases[-1:]]
    prepared = write_prepared(work / "a_prepared", train, val, args.size)
    n_train = sum(len(g.boxes) for g in train)
    mean_box = np.concatenate([g.boxes for g in train]).mean(axis=0)
    name = "(a) phantoms -> LIDC"
    _row(rows, name, "mean training box", _iou(np.broadcast_to(mean_box, lidc_boxes.shape), lidc_boxes), None,
         n_train)
    _row(rows, "(a') phantoms -> shifted phantoms", "mean training box",
         _iou(np.broadcast_to(mean_box, ph_boxes.shape), ph_boxes), None, n_train)
    for label, head, wide in _variants(args):
        settings = _settings(args.size, args.epochs_a, wide, head=head, seed=args.seed)
        predictor, seconds = _train(prepared, work / f"a_{head}_{wide}", settings, monitor=args.a_monitor)
        _row(rows, name, label, _iou(_predict(predictor, lidc_hu), lidc_boxes), seconds, n_train)
        _row(rows, "(a') phantoms -> shifted phantoms", label, _iou(_predict(predictor, ph_hu), ph_boxes),
             seconds, n_train)
    if args.skip_pseudo:
        return
    # Pseudo-labels: a quarter of each training phantom's lung slices confirmed, the HU rule on the rest.
    few, pseudo = [], []
    for cid, p in cases[:-1]:
        lung = np.flatnonzero(np.isfinite(p.boxes).all(axis=1))
        confirmed = lung[::4]
        few.append(slices_of(p.hu, p.boxes, cid, confirmed))
        rule = propose_volume(p.hu)
        zs = np.array([z for z in sorted(rule) if z not in set(confirmed.tolist())])
        rule_boxes = np.full((p.hu.shape[0], 4), np.nan, np.float32)
        for z in zs:
            rule_boxes[z] = rule[z]
        pseudo.append(slices_of(p.hu, rule_boxes, cid, zs))
    n_few = sum(len(g.boxes) for g in few)
    n_pseudo = sum(len(g.boxes) for g in pseudo)
    for label, groups in ((f"quick, {n_few} confirmed only", ()),
                          (f"quick, {n_few} confirmed + {n_pseudo} rule pseudo-labels (w 0.3)", pseudo)):
        folder = write_prepared(work / f"p_{bool(groups)}", few, val, args.size, pseudo=list(groups))
        epochs = args.epochs_a if groups else max(args.epochs_a, round(args.epochs_a * 4))  # same step count
        settings = _settings(args.size, epochs, True, head="profile", seed=args.seed) + [
            "pseudo_label_weight=0.3"]
        predictor, seconds = _train(folder, work / f"p_run_{bool(groups)}", settings)
        _row(rows, name, label, _iou(_predict(predictor, lidc_hu), lidc_boxes), seconds, n_few)
        _row(rows, "(a') phantoms -> shifted phantoms", label, _iou(_predict(predictor, ph_hu), ph_boxes),
             seconds, n_few)


def direction_b(work: Path, args, rows: list[dict], lidc, phantoms_test) -> None:
    from core.models.lung_localizer.prepare import slice_block_split
    from core.models.lung_localizer.synthetic import PlacedSlices, write_prepared

    hu, boxes, zs = lidc
    split = spread_block_split if args.b_val == "spread" else slice_block_split
    splits = np.array(split(len(zs), 0.2))
    train = PlacedSlices(hu[splits == "train"], boxes[splits == "train"], "LIDC-IDRI-0001")
    val = PlacedSlices(hu[splits == "val"], boxes[splits == "val"], "LIDC-IDRI-0001")
    prepared = write_prepared(work / "b_prepared", [train], [val], args.size)
    ph_hu, ph_boxes = phantoms_test
    mean_box = train.boxes.mean(axis=0)
    name = "(b) LIDC -> shifted phantoms"
    _row(rows, name, "mean training box", _iou(np.broadcast_to(mean_box, ph_boxes.shape), ph_boxes), None,
         len(train.boxes))
    how = f"val {args.b_val} block{'s' if args.b_val == 'spread' else ''}, best {args.b_monitor}"
    for label, head, wide in _variants(args):
        settings = _settings(args.size, args.epochs_b, wide, head=head, seed=args.seed)
        run = work / f"b_{head}_{wide}"
        predictor, seconds = _train(prepared, run, settings, monitor=args.b_monitor)
        _row(rows, name, f"{label}; {how}", _iou(_predict(predictor, ph_hu), ph_boxes), seconds,
             len(train.boxes))
        _row(rows, name, f"{label}; val {args.b_val}, last checkpoint", _iou(_predict(_last(run), ph_hu),
             ph_boxes), seconds, len(train.boxes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs-a", type=int, default=20)
    parser.add_argument("--epochs-b", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-pseudo", action="store_true")
    parser.add_argument("--heads", default="regress,profile", help="heads to train (comma-separated)")
    parser.add_argument("--variants", default="", help="VARIANTS indices (0,3: old, quick)")
    parser.add_argument("--only", choices=("a", "b"), default=None)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--b-val", choices=("top", "spread"), default="top",
                        help="(b) validation: a block of top slices (the product's split) or a top and a "
                        "middle block")
    parser.add_argument("--a-monitor", choices=("val_loss", "val_iou"), default="val_loss",
                        help="(a) checkpoint chosen by this validation metric (the family monitors val_loss)")
    parser.add_argument("--b-monitor", choices=("val_loss", "val_iou"), default="val_loss",
                        help="(b) checkpoint chosen by this validation metric (the family monitors val_loss)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not LIDC.is_dir():
        print(f"skipped: LIDC-IDRI-0001 not found at {LIDC} (set SLICEWISE_LIDC, or fetch it with "
              "`python -m core sample-data --out DIR`)")
        return 0
    load_before, started = os.getloadavg(), time.perf_counter()
    lidc = lidc_slices()
    phantoms_test = shifted_phantoms(range(900, 908))
    keep = _wide(phantoms_test[1])
    phantoms_test = (phantoms_test[0][keep], phantoms_test[1][keep])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_localizer_") as tmp:
        if args.only in (None, "a"):
            direction_a(Path(tmp), args, rows, lidc, phantoms_test)
        if args.only in (None, "b"):
            direction_b(Path(tmp), args, rows, lidc, phantoms_test)
    base = {r["direction"]: r["iou"] for r in rows if r["model"] == "mean training box"}
    narrow = {r["direction"]: r["iou"] for r in rows if r["model"] == VARIANTS[0][0]}  # may be absent
    print(f"\nLung localizer generalisation: ResNet-18 from scratch, {args.size} px, CPU, {args.threads} "
          f"thread(s), {args.epochs_a} / {args.epochs_b} epochs (a / b); scored on slices with lungs wider "
          f"than {MIN_WIDTH} of the image; seed {args.seed}; (b) validation {args.b_val}, checkpoint by "
          f"{args.b_monitor}")
    print(f"{'direction':36} {'model':58} {'n':>4} {'train':>5} {'mean IoU':>8} {'p10':>5} {'>=0.8':>6} "
          f"{'x mean box':>10} {'x old':>8} {'train s':>7}")
    for r in rows:
        vs_narrow = f"{r['iou'] / narrow[r['direction']]:8.2f}" if r["direction"] in narrow else f"{'':8}"
        seconds = f"{r['seconds']:7.0f}" if r["seconds"] is not None else f"{'-':>7}"
        ratio = r["iou"] / base[r["direction"]]
        print(f"{r['direction']:36} {r['model']:58} {r['n']:4d} {r['n_train']:5d} {r['iou']:8.3f} "
              f"{r['p10']:5.2f} {r['ge08']:6.0%} {ratio:10.2f} {vs_narrow} {seconds}")
    load_after = os.getloadavg()
    print(f"\ntotal {time.perf_counter() - started:.0f} s on {os.cpu_count()} CPU(s); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
