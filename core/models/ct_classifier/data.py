"""CT classifier data: two class folders (optionally under train/ and val/), a seeded split, and the
preprocessed volumes cached on disk once per (file, modification time, preprocessing settings).

Layouts accepted under `--data`:
    <data>/CT-0/*, <data>/CT-23/*           MosMed names (CT-0 normal, CT-23 ground-glass findings)
    <data>/normal/*, <data>/abnormal/*      or any two folders: the first by name is the negative class
    <data>/train/<two classes>, <data>/val/<two classes>   a given split (no random split then)
Each class folder holds volumes: NIfTI, NRRD or DICOM series folders (core.io.find_volumes).
A file that cannot be read, or is too small to resize, is reported (naming the file) and left out;
the rest of the data set is still used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_save_npy
from core.errors import SlicewiseError, TrainingDataError
from core.models.ct_classifier.preprocess import Preprocessing, preprocess_array

log = logging.getLogger("slicewise.train")

NEGATIVE_NAMES = ("ct-0", "normal")
POSITIVE_NAMES = ("ct-23", "abnormal")
# Folder names that are never a class: hidden folders, demo truth, caches.
NOT_CLASSES = {"truth", "__pycache__"}
VOLUME_FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".dcm")


@dataclass(frozen=True)
class CTCase:
    path: Path
    label: int  # 0 negative (normal), 1 positive (abnormal)
    case_id: str


@dataclass
class CTDataSet:
    root: Path
    classes: tuple[str, str]  # names shown for label 0 and 1
    class_folders: tuple[str, str]
    train: list[CTCase]
    val: list[CTCase]
    problems: list[str] = field(default_factory=list)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_CLASSES)


def order_classes(names: list[str]) -> tuple[str, str]:
    """(negative, positive) folder names: CT-0 / normal are negative, CT-23 / abnormal positive;
    otherwise the first by name is negative."""
    lowered = {n.lower(): n for n in names}
    for neg in NEGATIVE_NAMES:
        if neg in lowered:
            return lowered[neg], next(n for n in names if n != lowered[neg])
    for pos in POSITIVE_NAMES:
        if pos in lowered:
            return next(n for n in names if n != lowered[pos]), lowered[pos]
    first, second = sorted(names)
    return first, second


def display_classes(folders: tuple[str, str]) -> tuple[str, str]:
    """"normal"/"abnormal" for the MosMed or normal/abnormal folder names, else the folder names."""
    known = {n.lower() for n in folders}
    if known & set(NEGATIVE_NAMES) and known & set(POSITIVE_NAMES):
        return ("normal", "abnormal")
    return folders


def class_folders(folder: Path) -> tuple[Path, Path]:
    """The two class folders of `folder`, (negative, positive); TrainingDataError when not two."""
    subs = _subfolders(folder)
    names = [p.name for p in subs]
    if len(subs) != 2:
        what = "no sub-folders" if not subs else f"{len(subs)} folder(s): {', '.join(names)}"
        hint = ("one class folder; the CT classifier needs two, normal (CT-0 or normal) and abnormal "
                "(CT-23 or abnormal)") if len(subs) == 1 else (
                "the CT classifier needs exactly two class folders, e.g. CT-0 and CT-23, "
                "or normal and abnormal")
        raise TrainingDataError(f"{folder}: {what}; {hint}")
    neg, pos = order_classes(names)
    return folder / neg, folder / pos


def _cases(folder: Path, label: int) -> list[CTCase]:
    from core.io import find_volumes

    found = find_volumes(folder)
    return [CTCase(p, label, p.relative_to(folder.parent).as_posix()) for p in found]


def _split(cases: list[CTCase], seed: int, label: int, val_fraction: float, folder: Path
           ) -> tuple[list[CTCase], list[CTCase]]:
    if len(cases) < 2:
        raise TrainingDataError(f"{folder}: {len(cases)} volume(s); a class needs at least 2 to split "
                                f"into training and validation")
    order = np.random.default_rng([int(seed), label]).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, int(round(val_fraction * len(cases)))))
    val = sorted((cases[i] for i in order[:n_val]), key=lambda c: c.case_id)
    train = sorted((cases[i] for i in order[n_val:]), key=lambda c: c.case_id)
    return train, val


def discover(data: Path, seed: int = 0, val_fraction: float = 0.3) -> CTDataSet:
    """The data set under `data` (layouts in the module docstring), split 70/30 per class by default."""
    data = Path(data)
    if not data.is_dir():
        raise TrainingDataError(f"{data}: not a folder")
    if (data / "val").is_dir() and (data / "train").is_dir():
        train_neg, train_pos = class_folders(data / "train")
        val_neg, val_pos = class_folders(data / "val")
        folders = (train_neg.name, train_pos.name)
        if {val_neg.name, val_pos.name} != set(folders):
            raise TrainingDataError(f"{data / 'val'}: class folders {val_neg.name}, {val_pos.name} differ "
                                    f"from train/'s {', '.join(folders)}")
        train = _cases(train_neg, 0) + _cases(train_pos, 1)
        val = _cases(val_neg, 0) + _cases(val_pos, 1)
    else:
        neg, pos = class_folders(data)
        folders = (neg.name, pos.name)
        train, val = [], []
        for label, folder in enumerate((neg, pos)):
            part_train, part_val = _split(_cases(folder, label), seed, label, val_fraction, folder)
            train += part_train
            val += part_val
    return CTDataSet(data, display_classes(folders), folders, train, val)


def looks_like_dataset(folder: Path, names: set) -> bool:
    """The Train page's rule: two class folders with the known names (or train/ and val/ holding them),
    or exactly two sub-folders that directly hold volume files."""
    lowered = {n.lower() for n in names}
    if {"ct-0", "ct-23"} <= lowered or {"normal", "abnormal"} <= lowered:
        return True
    if {"train", "val"} <= names:
        try:
            inner = {e.name.lower() for e in os.scandir(folder / "train") if e.is_dir()}
        except OSError:
            return False
        return {"ct-0", "ct-23"} <= inner or {"normal", "abnormal"} <= inner
    subs = [n for n in names if not n.startswith(".") and n not in NOT_CLASSES and (folder / n).is_dir()]
    return len(subs) == 2 and all(_holds_volume_files(folder / n) for n in subs)


def _holds_volume_files(folder: Path, limit: int = 50) -> bool:
    try:
        with os.scandir(folder) as entries:
            for i, entry in enumerate(entries):
                if i >= limit:
                    break
                if entry.is_file() and entry.name.lower().endswith(VOLUME_FILE_SUFFIXES):
                    return True
    except OSError:
        return False
    return False


# ---------------------------------------------------------------------------------------------
# The preprocessed-volume cache
# ---------------------------------------------------------------------------------------------


def _stamp(path: Path) -> list:
    """What identifies a file's content cheaply: (name, mtime_ns, size) of it or of a series' files."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_mtime_ns, st.st_size]]
    return [[p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in sorted(path.iterdir()) if p.is_file()]


def cache_key(path: Path, prep: Preprocessing) -> str:
    text = json.dumps({"path": str(Path(path).resolve()), "stamp": _stamp(Path(path)),
                       "prep": prep.as_dict()}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


def preprocess_file(path: Path, prep: Preprocessing) -> np.ndarray:
    """Load a volume (any reader) and preprocess it; SlicewiseError naming the file on failure."""
    from core.io import load_volume

    volume = load_volume(path)
    return preprocess_array(volume.array, prep, where=str(path))


def cached_preprocess(path: Path, prep: Preprocessing, cache_dir: Path) -> tuple[Path, bool]:
    """(the cached .npy of `path`'s preprocessed volume, whether it was computed now)."""
    target = Path(cache_dir) / f"{cache_key(path, prep)}.npy"
    if target.is_file():
        return target, False
    array = preprocess_file(path, prep)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(target, array)
    return target, True


def default_cache_dir() -> Path:
    """`<runs root>/.cache/ct_classifier`: shared by every run, hidden from the runs list."""
    from core import settings

    return settings.runs_root() / ".cache" / "ct_classifier"


@dataclass
class Preprocessed:
    cases: list[CTCase]
    files: list[Path]
    problems: list[str]
    computed: int


def preprocess_cases(cases: list[CTCase], prep: Preprocessing, cache_dir: Path,
                     progress: Callable[[str], Any] = log.info) -> Preprocessed:
    """Each case's cached preprocessed volume; unreadable / too small ones are left out and reported."""
    kept, files, problems, computed = [], [], [], 0
    for i, case in enumerate(cases):
        try:
            file, fresh = cached_preprocess(case.path, prep, cache_dir)
        except SlicewiseError as exc:
            problems.append(str(exc))
            log.warning("left out: %s", exc)
            continue
        kept.append(case)
        files.append(file)
        computed += int(fresh)
        if fresh and (i + 1) % 10 == 0:
            progress(f"preprocessed {i + 1}/{len(cases)} volumes")
    return Preprocessed(kept, files, problems, computed)
