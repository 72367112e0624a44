"""Lung-box training data from chest CT phantoms, for tests and benchmarks.

Each phantom slice that shows lung is shrunk by a random factor and placed at a random
position in an air-filled field of view, as patients lie differently in the scanner; the
lung box moves with it. Without the placement the boxes barely vary between phantoms and
a constant mean box would already score well, which would prove nothing about learning.
The prepared folder has the layout `core.models.lung_localizer.prepare.prepare_lung_dataset` writes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AIR_HU = -1024.0


@dataclass(frozen=True)
class PlacedSlices:
    """(n, size, size) HU slices and their (n, 4) lung boxes as fractions."""

    hu: np.ndarray
    boxes: np.ndarray
    volume_id: str


def _shrink(hu: np.ndarray, size: int) -> np.ndarray:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True)
    return out[0, 0].numpy()


def placed_phantom_slices(
    seed: int, size: int = 64, depth: int = 16, zoom: tuple[float, float] = (0.55, 1.0), copies: int = 1,
    where: tuple[float, float] = (0.0, 1.0),
) -> PlacedSlices:
    """The lung slices of one phantom, each placed `copies` times at a random scale and position;
    `where` limits the offsets to that share of the free space (0, 0.2: near the top-left corner)."""
    from core.phantoms import chest_ct_phantom

    phantom = chest_ct_phantom(
        (depth, size, size), spacing=(40.0 / depth, 180.0 / size, 180.0 / size), seed=seed
    )
    rng = np.random.default_rng(10_000 + seed)
    lung = np.flatnonzero(~np.isnan(phantom.boxes[:, 0]))
    slices, boxes = [], []
    for z in np.repeat(lung, copies):
        side = int(round(size * rng.uniform(*zoom)))
        free = size - side
        ox, oy = rng.integers(int(where[0] * free), int(where[1] * free) + 1, size=2)
        canvas = np.full((size, size), AIR_HU, np.float32)
        canvas[oy : oy + side, ox : ox + side] = _shrink(phantom.hu[z], side)
        x0, y0, x1, y1 = phantom.boxes[z]
        boxes.append(
            [
                (ox + x0 * side) / size,
                (oy + y0 * side) / size,
                (ox + x1 * side) / size,
                (oy + y1 * side) / size,
            ]
        )
        slices.append(canvas)
    return PlacedSlices(np.stack(slices), np.asarray(boxes, np.float32), f"phantom_{seed:04d}")


def write_prepared(out: Path, train: list[PlacedSlices], val: list[PlacedSlices], size: int,
                   pseudo: list[PlacedSlices] = ()) -> Path:
    """Write the prepare step's layout (float16 .npy, boxes.csv, ids, stats.json) for placed slices;
    `pseudo` groups get the split "pseudo" (HU-rule pseudo-labels: a lower loss weight in training)."""
    from core.models.lung_localizer.prepare import BOXES_COLUMNS, lung_window_normalised, resize_square

    out = Path(out)
    rows, sums, squares, n_train = [], 0.0, 0.0, 0
    for split, groups in (("train", train), ("pseudo", pseudo), ("val", val)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for group in groups:
            images = resize_square(lung_window_normalised(group.hu), size)
            for z, (image, box) in enumerate(zip(images, group.boxes, strict=True)):
                name = f"{split}/{len(rows)}.npy"
                np.save(out / name, image.astype(np.float16))
                rows.append([f"{group.volume_id}#{z}", *map(float, box), group.volume_id, z, split, name])
                if split != "val":
                    sums += float(image.mean())
                    squares += float((image.astype(np.float64) ** 2).mean())
                    n_train += 1
    with (out / "boxes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(BOXES_COLUMNS)
        writer.writerows(rows)
    for split in ("train", "val"):
        (out / f"{split}_ids.txt").write_text("".join(f"{r[0]}\n" for r in rows if r[7] == split))
    mean = sums / n_train
    std = float(np.sqrt(max(squares / n_train - mean**2, 1e-12)))
    n_pseudo = sum(1 for r in rows if r[7] == "pseudo")
    stats = {"mean": mean, "std": std, "size": size, "n_train": n_train - n_pseudo,
             "n_val": len(rows) - n_train, "n_pseudo": n_pseudo}
    (out / "stats.json").write_text(json.dumps(stats))
    return out


def phantom_dataset(out: Path, train_seeds: range, val_seeds: range, size: int = 64, copies: int = 1) -> Path:
    """A prepared folder from phantoms: train and val from disjoint seeds (never one phantom in both)."""
    train = [placed_phantom_slices(s, size, copies=copies) for s in train_seeds]
    val = [placed_phantom_slices(s, size) for s in val_seeds]
    return write_prepared(out, train, val, size)


def demo_chest_phantoms(cases: int = 8, seed: int = 0, matrix: int = 256):
    """The demo data set's chest CT phantoms (`core.demo`: the same seeds, depths and spacings), in
    memory: [(case id, ChestPhantom)]."""
    from core.demo import case_seed
    from core.phantoms import chest_ct_phantom

    out = []
    for i in range(cases):
        rng = np.random.default_rng(case_seed(seed, "chest_ct", i))
        depth = int(rng.integers(40, 61))
        spacing = (float(rng.choice([2.0, 2.5, 3.0])), round(float(rng.uniform(0.65, 0.8)), 3))
        phantom = chest_ct_phantom((depth, matrix, matrix), (spacing[0], spacing[1], spacing[1]),
                                   seed=case_seed(seed, "chest_ct", i), lesions=i % 2 == 1)
        out.append((f"chest_{i:03d}", phantom))
    return out


def slices_of(
    hu: np.ndarray, boxes: np.ndarray, volume_id: str, zs: np.ndarray | None = None
) -> PlacedSlices:
    """PlacedSlices of a volume's slices `zs` (default: every slice with a box) as they are."""
    boxes = np.asarray(boxes, np.float32)
    if zs is None:
        zs = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    return PlacedSlices(np.asarray(hu[zs], np.float32), boxes[zs], volume_id)
