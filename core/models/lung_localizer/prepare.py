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
from collections.abc import Callable, Iterable
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
    for split in ("train", "val", "pseudo"):
        if (out / split).is_dir():
            shutil.rmtree(out / split)
        (out / split).mkdir(parents=True)


def _write_stats(out: Path, stats: dict) -> None:
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1))


BLOCK_GAP = 2  # slices left out between the train and val blocks of one patient (neighbours look alike)
SPLITS = ("auto", "patient", "blocks")
PSEUDO_LABELS = ("off", "rule")
PSEUDO_SPLIT = "pseudo"  # boxes.csv split of a rule box on an unannotated training slice (lower loss weight)


def slice_block_split(n_rows: int, val_fraction: float) -> list[str]:
    """Splits for the z-sorted annotated slices of one volume: a contiguous block at the top of
    the stack is validation, `BLOCK_GAP` slices next to it are left out ("gap"), the rest train.

    One patient cannot be split by patient; a block hold-out keeps near-identical neighbouring
    slices out of both sides (a random slice split would validate on copies of training slices).
    """
    n_val = max(1, round(val_fraction * n_rows)) if val_fraction > 0 else 0
    if n_val == 0 or n_rows - n_val - BLOCK_GAP < 1:
        return ["train"] * n_rows
    return ["train"] * (n_rows - n_val - BLOCK_GAP) + ["gap"] * BLOCK_GAP + ["val"] * n_val


def choose_split(split: str, n_patients: int) -> str:
    """The split a prepare run uses: `auto` = by patient when the slices come from two or more
    patients, else contiguous slice blocks per volume."""
    if split not in SPLITS:
        raise TrainingDataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "auto":
        return "patient" if n_patients >= 2 else "blocks"
    return split


SPLIT_TEXT = {
    "patient": "whole patients held out (salted hash of the DICOM PatientID, else the series)",
    "blocks": f"a contiguous block of the top annotated slices of each volume, {BLOCK_GAP} slices between "
              "it and the training slices left out",
}


def select_rows(rows: list[dict], include_proposals: bool) -> tuple[list[dict], dict[str, int]]:
    """The rows training uses: confirmed boxes, plus unconfirmed proposals (`core.annotate.is_proposal`)
    when `include_proposals`; and the counts {"confirmed", "proposals", "proposals_used"}."""
    from core.annotate import is_proposal

    proposals = [r for r in rows if is_proposal(r)]
    confirmed = [r for r in rows if not is_proposal(r)]
    used = rows if include_proposals else confirmed
    return used, {"confirmed": len(confirmed), "proposals": len(proposals),
                  "proposals_used": len(proposals) if include_proposals else 0}


def _pseudo_boxes(hu: np.ndarray, taken: set[int], below: int | None) -> list[tuple[int, tuple]]:
    """[(z, box)] HU-rule boxes (`core.propose.propose_volume`) on slices not in `taken` (annotated,
    proposal or not) and, when `below` is set, under the validation block (z < below)."""
    from core.propose import propose_volume

    boxes = propose_volume(hu)
    return [(z, box) for z, box in sorted(boxes.items())
            if z not in taken and (below is None or z < below)]


def prepare_lung_dataset(csv_path: str | Path, data_root: str | Path, out_dir: str | Path,
                         val_fraction: float = 0.2, size: int = 512, seed: int = 0,
                         progress: Callable[[str], object] = print, split: str = "auto",
                         include_proposals: bool = False, pseudo_labels: str = "off",
                         exclude_volumes: Iterable[str] = ()) -> Path:
    """Write `<out>/{train,val}/<n>.npy`, `boxes.csv`, `train_ids.txt`, `val_ids.txt`, `stats.json`.

    `split`: patient (hold whole patients out), blocks (a block of top slices of each volume, with a
    gap) or auto (patient with two or more patients, else blocks). Only confirmed boxes are used
    unless `include_proposals`. `pseudo_labels="rule"` adds HU-rule boxes of the unannotated slices
    of the training volumes (split "pseudo" in boxes.csv: the trainer gives them a lower weight).
    Volumes in `exclude_volumes` (a scored, held-out volume) never enter. Rows whose volume cannot
    be read are skipped and listed in stats.json ("skipped"); raises TrainingDataError when
    nothing is left or the CSV holds no box.
    """
    if int(size) < 8:
        raise TrainingDataError(f"size must be at least 8 pixels, got {size}")
    if pseudo_labels not in PSEUDO_LABELS:
        raise TrainingDataError(f"pseudo_labels must be one of {', '.join(PSEUDO_LABELS)}, "
                                f"got {pseudo_labels!r}")
    all_rows = BoxStore(csv_path).rows()
    if not all_rows:
        raise TrainingDataError(f"{csv_path}: no annotated slice to prepare (the CSV is empty or missing)")
    excluded = set(exclude_volumes)
    rows, counts = select_rows([r for r in all_rows if r["Volume"] not in excluded], include_proposals)
    progress(f"{counts['confirmed']} confirmed box(es); {counts['proposals']} unconfirmed proposal(s) "
             + ("included (include_proposals)" if include_proposals else "left out (include_proposals=false)")
             + (f"; {len(excluded)} volume(s) excluded" if excluded else ""))
    if not rows:
        raise TrainingDataError(
            f"{csv_path}: no confirmed box to train on ({counts['proposals']} unconfirmed proposal(s) left "
            "out; confirm them on the Annotate page or set include_proposals=true)")
    taken = {(r["Volume"], int(r["Slice"])) for r in all_rows}
    by_volume: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_volume[row["Volume"]].append(row)
    locator = VolumeLocator(data_root)
    groups = group_volumes(locator, by_volume)
    chosen = choose_split(split, len(set(groups.values())))
    val_ids = split_groups(groups, val_fraction, seed)[1] if chosen == "patient" else set()
    n_patients = len(set(groups.values()))
    progress(f"split {chosen} (setting {split}, {n_patients} patient(s)): {SPLIT_TEXT[chosen]}")
    out = Path(out_dir)
    _reset_out(out)
    table, skipped, totals = [], [], {"sum": 0.0, "sumsq": 0.0}
    counters = {"train": 0, "val": 0, PSEUDO_SPLIT: 0}
    for k, volume_id in enumerate(sorted(by_volume), start=1):
        split_of_volume = "val" if volume_id in val_ids else "train"
        try:
            vrows = sorted(by_volume[volume_id], key=lambda r: int(r["Slice"]))
            volume = locator.load(volume_id)
            hu = volume.array[[locator.slice_index(volume, r["Image"], int(r["Slice"])) for r in vrows]]
        except SlicewiseError as exc:
            skipped.append(f"{volume_id}: {exc}")
            progress(f"volume {k}/{len(by_volume)}: skipped {volume_id} ({exc})")
            continue
        splits = (slice_block_split(len(vrows), val_fraction) if chosen == "blocks"
                  else [split_of_volume] * len(vrows))
        items = list(zip(hu, vrows, splits, strict=True))
        if pseudo_labels == "rule" and split_of_volume == "train":
            held = [int(r["Slice"]) for r, s in zip(vrows, splits, strict=True) if s != "train"]
            volume_taken = {z for v, z in taken if v == volume_id}
            for z, box in _pseudo_boxes(volume.array, volume_taken, min(held) if held else None):
                items.append((volume.array[z], {"Image": volume.slice_ids[z], "Xmin": box[0], "Ymin": box[1],
                                                "Xmax": box[2], "Ymax": box[3], "Volume": volume_id,
                                                "Slice": z}, PSEUDO_SPLIT))
        kept = [(h, r, s) for h, r, s in items if s != "gap"]
        images = (resize_square(lung_window_normalised(np.stack([h for h, _, _ in kept])), int(size))
                  .astype(np.float16) if kept else [])
        for image, (_, row, split_name) in zip(images, kept, strict=True):
            name = f"{split_name}/{counters[split_name]}.npy"
            counters[split_name] += 1
            np.save(out / name, image)
            if split_name != "val":
                values = image.astype(np.float64)
                totals["sum"] += values.sum() / values.size
                totals["sumsq"] += np.square(values).sum() / values.size
            table.append({**{c: row[c] for c in BOXES_COLUMNS[:7]}, "split": split_name, "file": name})
        locator.forget(volume_id)
        names = [s for _, _, s in items]
        progress(f"volume {k}/{len(by_volume)}: {volume_id} -> "
                 + ", ".join(f"{names.count(s)} {s}" for s in ("train", "val", "gap", PSEUDO_SPLIT)
                             if s in names)
                 + " slice(s)")
    info = {"split": chosen, "split_setting": split, "include_proposals": bool(include_proposals),
            "confirmed_boxes": counts["confirmed"], "proposal_boxes": counts["proposals"],
            "proposals_used": counts["proposals_used"], "pseudo_labels": pseudo_labels,
            "n_pseudo": counters[PSEUDO_SPLIT], "excluded_volumes": sorted(excluded)}
    return _finish(out, table, skipped, totals, counters, int(size), seed, val_fraction, progress, groups,
                   info)


def _finish(out: Path, table: list[dict], skipped: list[str], totals: dict, counters: dict, size: int,
            seed: int, val_fraction: float, progress: Callable[[str], object],
            groups: dict[str, str], info: dict) -> Path:
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
    n_stats = counters["train"] + counters[PSEUDO_SPLIT]
    mean = totals["sum"] / n_stats
    std = math.sqrt(max(0.0, totals["sumsq"] / n_stats - mean * mean))
    stats = {"mean": mean, "std": std, "size": size, "n_train": counters["train"], "n_val": counters["val"],
             "seed": seed, "val_fraction": val_fraction, "scale": "value / 65535 (lung window / max)",
             "window": list(PRESETS["lung"]), "skipped": skipped,
             "train_volumes": sorted({r["Volume"] for r in table if r["split"] == "train"}),
             "val_volumes": sorted({r["Volume"] for r in table if r["split"] == "val"}),
             "split_by": SPLIT_TEXT[info["split"]], **info,
             "train_groups": sorted({groups[r["Volume"]] for r in table if r["split"] == "train"}),
             "val_groups": sorted({groups[r["Volume"]] for r in table if r["split"] == "val"})}
    if counters["val"] == 0:
        progress("warning: no validation slice (annotate more slices, or slices of a second patient)")
    _write_stats(out, stats)
    progress(f"prepared {counters['train']} train / {counters['val']} val slices"
             + (f" + {counters[PSEUDO_SPLIT]} pseudo-labelled (HU rule)" if counters[PSEUDO_SPLIT] else "")
             + f" in {out}, split {info['split']} "
             f"(mean {mean:.4f}, std {std:.4f})")
    return out
