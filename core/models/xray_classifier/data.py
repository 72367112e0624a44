"""Class-folder data (SPEC 5B): `train/ val/ test/` x one folder per class of PNG, JPEG or DICOM images.

Class names are the folder names under train/ (sorted). Without val/, a seeded stratified share of
train/ is held out. Images are decoded once with `core.io.load_volume` (any size, RGB/16-bit/
MONOCHROME1 handled by the readers), scaled to [0, 1] by their percentiles and resized; files that
cannot be read are skipped and listed in the log. Train: resize, random rotation, random horizontal
flip; evaluation: resize and center crop; both normalised with the ImageNet mean/std.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core.errors import SlicewiseError, TrainingDataError
from core.models.xray_classifier.net import eval_image, grey_unit, resize_square, to_network
from core.models.xray_classifier.spec import IMAGE_SUFFIXES

log = logging.getLogger("slicewise.train")


@dataclass
class Split:
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self, n_classes: int) -> list[int]:
        return np.bincount(np.asarray(self.labels, int), minlength=n_classes).tolist()


@dataclass
class ClassFolders:
    root: Path
    classes: list[str]
    train: Split
    val: Split
    test: Split
    val_from_train: bool = False


def is_image_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and (path.suffix.lower() in IMAGE_SUFFIXES or path.suffix == "")
    )


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and (p.suffix or _is_dicom(p)))


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _read_split(folder: Path, classes: list[str]) -> Split:
    split = Split()
    for class_dir in _class_dirs(folder):
        if class_dir.name not in classes:
            raise TrainingDataError(
                f"{class_dir}: class folder {class_dir.name!r} is not in train/ "
                f"(classes there: {', '.join(classes)})"
            )
        for path in _images(class_dir):
            split.paths.append(path)
            split.labels.append(classes.index(class_dir.name))
    return split


def stratified_split(split: Split, fraction: float, seed: int, n_classes: int) -> tuple[Split, Split]:
    """(rest, held out): `fraction` of each class (at least one image when a class has two or more)."""
    rng = np.random.default_rng(seed)
    keep, held = Split(), Split()
    labels = np.asarray(split.labels, int)
    chosen: set[int] = set()
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        n = int(round(len(idx) * fraction))
        n = min(max(n, 1 if len(idx) >= 2 else 0), max(len(idx) - 1, 0))
        chosen.update(rng.permutation(idx)[:n].tolist())
    for i, (path, label) in enumerate(zip(split.paths, split.labels, strict=True)):
        target = held if i in chosen else keep
        target.paths.append(path)
        target.labels.append(label)
    return keep, held


def resolve_class_folders(data: Path, val_fraction: float = 0.15, seed: int = 0) -> ClassFolders:
    """Read the layout under `data`; a TrainingDataError naming the folder when it does not fit."""
    root = Path(data).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise TrainingDataError(
            f"{root}: no train/ folder (expected train/ val/ test/ with one folder per "
            "class, e.g. NORMAL/ and PNEUMONIA/)"
        )
    class_dirs = _class_dirs(train_dir)
    if len(class_dirs) < 2:
        found = ", ".join(p.name for p in class_dirs) or "none"
        raise TrainingDataError(f"{train_dir}: needs at least two class folders (found {found})")
    classes = [p.name for p in class_dirs]
    train = _read_split(train_dir, classes)
    for c, class_dir in enumerate(class_dirs):
        if c not in train.labels:
            raise TrainingDataError(f"{class_dir}: class folder holds no images (PNG, JPEG or DICOM)")
    val_dir, test_dir = root / "val", root / "test"
    val_from_train = not val_dir.is_dir()
    if val_from_train:
        train, val = stratified_split(train, val_fraction, seed, len(classes))
        log.info(
            "%s: no val/ folder: held out %d of train/ for validation (seed %d, stratified)",
            root,
            len(val),
            seed,
        )
    else:
        val = _read_split(val_dir, classes)
    test = _read_split(test_dir, classes) if test_dir.is_dir() else Split()
    if len(val) == 0:
        raise TrainingDataError(f"{val_dir if not val_from_train else train_dir}: no validation images")
    return ClassFolders(root, classes, train, val, test, val_from_train)


def positive_index(classes: list[str], setting: str = "") -> int:
    """The class sensitivity/ROC count as positive: the setting, else PNEUMONIA, else the last class."""
    if setting:
        if setting not in classes:
            raise TrainingDataError(f"positive_class {setting!r} is not a class ({', '.join(classes)})")
        return classes.index(setting)
    upper = [c.upper() for c in classes]
    return upper.index("PNEUMONIA") if "PNEUMONIA" in upper else len(classes) - 1


# ---------------------------------------------------------------- decoding


def read_grey(path: Path) -> np.ndarray:
    """One image file -> (y, x) float32 in [0, 1]; a SlicewiseError naming the file otherwise."""
    from core.io import load_volume

    volume = load_volume(path)
    if volume.shape[0] != 1:
        raise TrainingDataError(f"{path}: a 2D image is needed, got {volume.shape[0]} slices")
    return grey_unit(volume.array[0])


def decode_split(
    split: Split, to_tensor, workers: int = 1
) -> tuple[torch.Tensor, list[int], list[Path], list[str]]:
    """Decode every image of a split: (uint8 (n, S, S) tensor, labels, paths, skipped-file messages)."""

    def one(path: Path):
        try:
            return to_tensor(read_grey(path)), None
        except Exception as exc:  # any reader failure (PIL's DecompressionBombError too): skip, name the file
            return None, _named(path, exc)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, split.paths))
    images, labels, paths, skipped = [], [], [], []
    for (image, error), path, label in zip(results, split.paths, split.labels, strict=True):
        if image is None:
            skipped.append(error)
            continue
        images.append((image * 255).round().to(torch.uint8))
        labels.append(label)
        paths.append(path)
    stacked = torch.stack(images) if images else torch.zeros((0, 1, 1), dtype=torch.uint8)
    return stacked, labels, paths, skipped


def _named(path: Path, exc: BaseException) -> str:
    """The error's message with the file's path in front when the message does not name it."""
    text = str(exc) if isinstance(exc, SlicewiseError) else f"{type(exc).__name__}: {exc}"
    return text if str(path) in text else f"{path}: {text}"


class XrayDataset(Dataset):
    """Decoded images (uint8, already at the network size) -> (normalised 3-channel tensor, label)."""

    def __init__(
        self, images: torch.Tensor, labels: list[int], train: bool, settings: dict[str, Any]
    ) -> None:
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)
        self.train = train
        self.rotate = float(settings.get("rotate_deg", 20.0))
        self.hflip = bool(settings.get("hflip", True))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float()[None] / 255.0  # (1, S, S)
        if self.train:
            from torchvision.transforms.v2 import functional as tvf

            if self.rotate > 0:
                angle = float(torch.empty(1).uniform_(-self.rotate, self.rotate))
                x = tvf.rotate(x, angle, interpolation=tvf.InterpolationMode.BILINEAR)
            if self.hflip and bool(torch.rand(1) < 0.5):
                x = x.flip(-1)
        return to_network(x[None])[0], self.labels[i]


def train_tensor(size: int):
    return lambda grey: resize_square(grey, size)


def eval_tensor(size: int, crop_fraction: float):
    return lambda grey: eval_image(grey, size, crop_fraction)
