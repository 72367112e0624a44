"""The segmenter's crops as datasets, with SPEC 5D augmentation reproducible from (seed, epoch, index).

Training crops are cut around the true box with a margin of `translate_vox` voxels in H and W, so the
±translation is a shift of the crop window (the content stays real, no zero fill). Horizontal flip,
rotation about the depth axis (±rotate_deg, the label resampled nearest) and Gaussian noise follow.
Validation crops sit where the trained locator puts them, as at prediction time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from core.models.vnet.data import Case
from core.models.vnet.losses import signed_distance
from core.models.vnet.stages import Box, pad_to, window


def _cut(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """array[start:start+size] with zeros where the window leaves the array."""
    out = np.zeros(tuple(size), array.dtype)
    src, dst = [], []
    for axis in range(3):
        lo, hi = max(0, start[axis]), min(array.shape[axis], start[axis] + size[axis])
        src.append(slice(lo, hi))
        dst.append(slice(lo - start[axis], hi - start[axis]))
    out[tuple(dst)] = array[tuple(src)]
    return out


@dataclass(eq=False)
class TrainCrop:
    case_id: str
    image: np.ndarray  # crop size + 2 * margin along H and W
    label: np.ndarray
    margin: int
    size: tuple[int, int, int]

    @classmethod
    def around(cls, case: Case, box: Box, size: Sequence[int], pad: Sequence[int], margin: int) -> TrainCrop:
        where = window(box, size, pad)
        start = [where[0].start, where[1].start - margin, where[2].start - margin]
        big = [size[0], size[1] + 2 * margin, size[2] + 2 * margin]
        return cls(
            case.case_id,
            _cut(pad_to(case.image, pad), start, big),
            _cut(pad_to(case.label, pad), start, big),
            margin,
            tuple(int(s) for s in size),
        )


@dataclass(eq=False)
class ValCrop:
    case_id: str
    image: np.ndarray
    label: np.ndarray
    outside: int  # true voxels outside the crop (missed by stage 1)

    @classmethod
    def at(cls, case: Case, where: tuple[slice, slice, slice], pad: Sequence[int]) -> ValCrop:
        label = pad_to(case.label, pad)
        crop = np.ascontiguousarray(label[where])
        return cls(
            case.case_id,
            np.ascontiguousarray(pad_to(case.image, pad)[where]),
            crop,
            int(label.sum()) - int(crop.sum()),
        )


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index), 5])


def rotate_depth_axis(image: np.ndarray, label: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate every axial slice by `degrees` about the volume centre (bilinear image, nearest label)."""
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    h, w = image.shape[1:]
    # affine_grid works in normalised coordinates; correct for a non-square slice
    matrix = torch.tensor([[[c, -s * h / w, 0, 0], [s * w / h, c, 0, 0], [0, 0, 1, 0]]], dtype=torch.float32)
    grid = F.affine_grid(matrix, [1, 1, *image.shape], align_corners=False)
    img = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    lab = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None, None]
    out_img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out_lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out_img[0, 0].numpy(), out_lab[0, 0].numpy().astype(np.uint8)


class TrainCrops(Dataset):
    """Items are `epoch * n + index` (EpochSampler): the epoch seeds the augmentation in any worker."""

    def __init__(self, crops: list[TrainCrop], settings: dict[str, Any], distance: bool) -> None:
        self.crops, self.distance = crops, distance
        self.seed, self.augment = int(settings["seed"]), bool(settings["augment"])
        self.noise, self.rotate = float(settings["noise_std"]), float(settings["rotate_deg"])

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, item: int) -> dict[str, Any]:
        epoch, index = divmod(int(item), len(self.crops))
        crop = self.crops[index]
        rng = item_rng(self.seed, epoch, index)
        m = crop.margin
        dy, dx = (int(v) for v in rng.integers(-m, m + 1, size=2)) if self.augment else (0, 0)
        d, h, w = crop.size
        where = (slice(0, d), slice(m + dy, m + dy + h), slice(m + dx, m + dx + w))
        image, label = crop.image[where], crop.label[where]
        if self.augment:
            if rng.random() < 0.5:
                image, label = image[:, :, ::-1], label[:, :, ::-1]
            angle = float(rng.uniform(-self.rotate, self.rotate))
            if self.rotate > 0 and abs(angle) > 1e-3:
                image, label = rotate_depth_axis(image, label, angle)
            image = image + rng.normal(0.0, self.noise, image.shape).astype(np.float32)
        return _item(crop.case_id, image, label, 0, self.distance)


class ValCrops(Dataset):
    def __init__(self, crops: list[ValCrop], distance: bool) -> None:
        self.crops, self.distance = crops, distance

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict[str, Any]:
        crop = self.crops[index]
        return _item(crop.case_id, crop.image, crop.label, crop.outside, self.distance)


def _item(case_id: str, image: np.ndarray, label: np.ndarray, outside: int, distance: bool) -> dict[str, Any]:
    image = np.ascontiguousarray(image, dtype=np.float32)
    label = np.ascontiguousarray(label, dtype=np.float32)
    phi = signed_distance(label) if distance else np.zeros((1, 1, 1), np.float32)
    return {
        "image": torch.from_numpy(image)[None],
        "label": torch.from_numpy(label)[None],
        "distance": torch.from_numpy(phi)[None],
        "case_id": case_id,
        "outside": outside,
    }


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch), yielding `epoch * n + index`."""

    def __init__(self, n: int, seed: int, epoch_fn: Callable[[], int]) -> None:
        self.n, self.seed, self.epoch_fn = n, seed, epoch_fn

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        epoch = int(self.epoch_fn())
        order = np.random.default_rng([self.seed, epoch, 11]).permutation(self.n)
        return iter(int(epoch * self.n + i) for i in order)


class CropDataModule(pl.LightningDataModule):
    def __init__(self, train: list[TrainCrop], val: list[ValCrop], settings: dict[str, Any], distance: bool):
        super().__init__()
        self.settings = settings
        self.train_set = TrainCrops(train, settings, distance)
        self.val_set = ValCrops(val, distance)
        self._loaders: dict[str, DataLoader] = {}
        self._loaders_for: object = None

    def _kwargs(self) -> dict[str, Any]:
        workers = int(self.settings["num_workers"])
        return {
            "batch_size": int(self.settings["batch_size"]),
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _cached(self, name: str, build: Callable[[], DataLoader]) -> DataLoader:
        """One loader per fit (the engine asks again every epoch; persistent workers stay)."""
        if self._loaders_for is not self.trainer:
            self._loaders, self._loaders_for = {}, self.trainer
        if name not in self._loaders:
            self._loaders[name] = build()
        return self._loaders[name]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        seed = int(self.settings["seed"])

        def build() -> DataLoader:
            sampler = EpochSampler(
                len(self.train_set), seed, lambda: trainer.current_epoch if trainer is not None else 0
            )
            drop_last = len(self.train_set) > int(self.settings["batch_size"])
            return DataLoader(self.train_set, sampler=sampler, drop_last=drop_last, **self._kwargs())

        return self._cached("train", build)

    def val_dataloader(self) -> DataLoader:
        return self._cached("val", lambda: DataLoader(self.val_set, shuffle=False, **self._kwargs()))
