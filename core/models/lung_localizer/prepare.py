"""Annotated slices -> the lung-box model's training set (SPEC section 4).

For each slice in the annotation CSV: read its volume, apply the lung window (center -600,
width 1500), divide by the slice's maximum, resize to `size` x `size` (bilinear, antialiased,
exactly what `core.models.lung_localizer.prepare_input` does at prediction time) and store it as
float16 `.npy` under `train/` or `val/`. The reference pipeline scales to 0-65535 twice; float16
tops out at 65504, so we store value / 65535, i.e. [0, 1]. Volumes (series) are split, never
slices, so no series is in both. Mean and std come from the per-image mean and mean of squares
of the written training files, in [0, 1] units.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.annotations import BoxStore, atomic_write_text
from core.errors import SlicewiseError, TrainingDataError
from core.export import VolumeLocator
from core.windowing import PRESETS, apply_window

BOXES_COLUMNS = ("Image", "Xmin", "Ymin", "Xmax", "Ymax", "Volume", "Slice", "split", "file")
# PatientIDs that anonymisers write for everyone: grouping by them would put every series in one group.
PLACEHOLDER_PATIENT_IDS = frozenset({"", "ANON", "ANONYMOUS", "ANONYMIZED", "ANONYMISED", "UNKNOWN", "NONE",
                                     "NULL", "N/A", "NA", "0", "PATIENT", "ANONYMOUS^PATIENT"})


def lung_window_normalised(hu_slices: np.ndarray) -> np.ndarray:
    """(n, y, x) HU -> lung window in [0, 1], each slice divided by its maximum (0 stays 0)."""
    center, width = PRESETS["lung"]
    windowed = apply_window(hu_slices, center, width)
    peak = windowed.reshape(windowed.shape[0], -1).max(axis=1)
    peak[peak <= 0] = 1.0
    return windowed / peak[:, None, None]


def resize_square(slices: np.ndarray, size: int) -> np.ndarray:
    """(n, y, x) float32 -> (n, size, size): bilinear with antialiasing, as at prediction time."""
    if slices.shape[1:] == (size, size):
        return slices
    import torch  # lazily: importing core must not import torch

    tensor = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32)).unsqueeze(1)
    out = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear",
                                          align_corners=False, antialias=True)
    return out.squeeze(1).numpy()


def split_volumes(volume_ids: list[str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train, val) volume ids: a seeded shuffle; at least one val volume when there are two or more
    and val_fraction > 0, at least one train volume always."""
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingDataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(volume_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = round(val_fraction * len(ids))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    val = {ids[i] for i in order[:n_val]}
    return set(ids) - val, val


def usable_patient_id(value: object) -> str | None:
    """The PatientID as a grouping key, or None when it is missing or an anonymisation placeholder."""
    text = str(value or "").strip()
    return None if text.upper() in PLACEHOLDER_PATIENT_IDS else text


def patient_of(locator: VolumeLocator, volume_id: str, rows: list[dict]) -> str | None:
    """The usable PatientID of a volume, from one DICOM header of its annotated slices (no pixels).

    This is the value `Volume.meta["PatientID"]` holds after loading (the series' first header);
    non-DICOM volumes have none.
    """
    slices = locator.dicom_slices()
    ref = next((slices[r["Image"]] for r in rows if r["Image"] in slices), None)
    if ref is None:
        return None
    from core.io.dicom import read_header

    path = Path(ref.path) if Path(ref.path).is_absolute() else locator.root / ref.path
    try:
        return usable_patient_id(read_header(path, tags=("PatientID",)).get("PatientID"))
    except SlicewiseError:
        return None


def split_groups(volume_groups: dict[str, str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train, val) volume ids when `volume_groups` maps volume id -> group (patient) key: the groups
    are split by `split_volumes`, so no group has volumes on both sides."""
    train_groups, val_groups = split_volumes(sorted(set(volume_groups.values())), val_fraction, seed)
    val = {v for v, g in volume_groups.items() if g in val_groups}
    return set(volume_groups) - val, val


def group_volumes(locator: VolumeLocator, by_volume: dict[str, list[dict]]) -> dict[str, str]:
    """{volume id: "patient:<salted hash of the PatientID>" or "series:<volume id>"}. The PatientID
    itself is never kept: stats.json, which lists the groups, carries no patient identifier."""
    from core.io.phi import pseudonym

    groups = {}
    for volume_id, rows in by_volume.items():
        patient = patient_of(locator, volume_id, rows)
        groups[volume_id] = f"patient:{pseudonym(patient)}" if patient else f"series:{volume_id}"
    return groups


def _reset_out(out: Path) -> None:
    """Drop what an earlier prepare wrote here (its stats.json first: it marks a finished run)."""
    (out / "stats.json").unlink(missing_ok=True)
    for split in ("train", "val"):
        if (out / split).is_dir():
            shutil.rmtree(out / split)
        (out / split).mkdir(parents=True)


def _volume_slices(locator: VolumeLocator, volume_id: str, rows: list[dict]) -> np.ndarray:
    """(n, y, x) HU of the annotated slices of one volume, in the order of `rows`."""
    volume = locator.load(volume_id)
    zs = [locator.slice_index(volume, r["Image"], int(r["Slice"])) for r in rows]
    return volume.array[zs]


def _write_stats(out: Path, stats: dict) -> None:
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1))


BLOCK_GAP = 2  # slices left out between the train and val blocks of one patient (neighbours look alike)


def slice_block_split(n_rows: int, val_fraction: float) -> list[str]:
    """Splits for the z-sorted annotated slices of the only patient: a contiguous block at the top of
    the stack is validation, `BLOCK_GAP` slices next to it are left out ("gap"), the rest train.

    One patient cannot be split by patient; a block hold-out keeps near-identical neighbouring
    slices out of both sides (a random slice split would validate on copies of training slices).
    """
    n_val = max(1, round(val_fraction * n_rows)) if val_fraction > 0 else 0
    if n_val == 0 or n_rows - n_val - BLOCK_GAP < 1:
        return ["train"] * n_rows
    return ["train"] * (n_rows - n_val - BLOCK_GAP) + ["gap"] * BLOCK_GAP + ["val"] * n_val


def prepare_lung_dataset(csv_path: str | Path, data_root: str | Path, out_dir: str | Path,
                         val_fraction: float = 0.2, size: int = 512, seed: int = 0,
                         progress: Callable[[str], object] = print) -> Path:
    """Write `<out>/{train,val}/<n>.npy`, `boxes.csv`, `train_ids.txt`, `val_ids.txt`, `stats.json`.

    Rows whose volume cannot be read are skipped and listed in stats.json ("skipped"); raises
    TrainingDataError when nothing is left or the CSV holds no box.
    """
    if int(size) < 8:
        raise TrainingDataError(f"size must be at least 8 pixels, got {size}")
    rows = BoxStore(csv_path).rows()
    if not rows:
        raise TrainingDataError(f"{csv_path}: no annotated slice to prepare (the CSV is empty or missing)")
    by_volume: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_volume[row["Volume"]].append(row)
    locator = VolumeLocator(data_root)
    groups = group_volumes(locator, by_volume)
    train_ids, val_ids = split_groups(groups, val_fraction, seed)
    one_patient = len(set(groups.values())) == 1 and val_fraction > 0
    if one_patient:
        progress("one patient only: validating on a block of its top slices (no patient split possible)")
    out = Path(out_dir)
    _reset_out(out)
    table, skipped, totals = [], [], {"sum": 0.0, "sumsq": 0.0}
    counters = {"train": 0, "val": 0}
    for k, volume_id in enumerate(sorted(by_volume), start=1):
        split = "val" if volume_id in val_ids else "train"
        try:
            vrows = sorted(by_volume[volume_id], key=lambda r: r["Slice"])
            hu = _volume_slices(locator, volume_id, vrows)
        except SlicewiseError as exc:
            skipped.append(f"{volume_id}: {exc}")
            progress(f"volume {k}/{len(by_volume)}: skipped {volume_id} ({exc})")
            continue
        images = resize_square(lung_window_normalised(hu), int(size)).astype(np.float16)
        splits = slice_block_split(len(vrows), val_fraction) if one_patient else [split] * len(vrows)
        for image, row, split in zip(images, vrows, splits, strict=True):
            if split == "gap":
                continue
            name = f"{split}/{counters[split]}.npy"
            counters[split] += 1
            np.save(out / name, image)
            if split == "train":
                values = image.astype(np.float64)
                totals["sum"] += values.sum() / values.size
                totals["sumsq"] += np.square(values).sum() / values.size
            table.append({**{c: row[c] for c in BOXES_COLUMNS[:7]}, "split": split, "file": name})
        locator.forget(volume_id)
        progress(f"volume {k}/{len(by_volume)}: {volume_id} -> "
                 + ", ".join(f"{splits.count(s)} {s}" for s in ("train", "val", "gap") if s in splits)
                 + " slice(s)")
    return _finish(out, table, skipped, totals, counters, int(size), seed, val_fraction, progress, groups)


def _finish(out: Path, table: list[dict], skipped: list[str], totals: dict, counters: dict, size: int,
            seed: int, val_fraction: float, progress: Callable[[str], object],
            groups: dict[str, str]) -> Path:
    if counters["train"] == 0:
        why = "; ".join(skipped) or "no rows"
        raise TrainingDataError(f"{out}: no training slice could be prepared ({why})")
    with open(out / "boxes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=BOXES_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    for split in ("train", "val"):
        ids = [r["Image"] for r in table if r["split"] == split]
        (out / f"{split}_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    mean = totals["sum"] / counters["train"]
    std = math.sqrt(max(0.0, totals["sumsq"] / counters["train"] - mean * mean))
    stats = {"mean": mean, "std": std, "size": size, "n_train": counters["train"], "n_val": counters["val"],
             "seed": seed, "val_fraction": val_fraction, "scale": "value / 65535 (lung window / max)",
             "window": list(PRESETS["lung"]), "skipped": skipped,
             "train_volumes": sorted({r["Volume"] for r in table if r["split"] == "train"}),
             "val_volumes": sorted({r["Volume"] for r in table if r["split"] == "val"}),
             "split_by": ("a block of one patient's top slices (one patient only)"
                          if len(set(groups.values())) == 1 and counters["val"] else
                          "patient (salted hash of the DICOM PatientID), else series"),
             "train_groups": sorted({groups[r["Volume"]] for r in table if r["split"] == "train"}),
             "val_groups": sorted({groups[r["Volume"]] for r in table if r["split"] == "val"})}
    if counters["val"] == 0:
        progress("warning: no validation slice (annotate slices of at least two volumes)")
    _write_stats(out, stats)
    progress(f"prepared {counters['train']} train / {counters['val']} val slices in {out} "
             f"(mean {mean:.4f}, std {std:.4f})")
    return out
