"""The two stages of SPEC 5D as plain functions: pad, downscale, locate, widen, crop, segment, place back.

Geometry is in voxels of the zero-padded volume (padding goes after the data on every axis, so an index
in the padded volume is the same index in the original). Boxes are inclusive (lo, hi) index triples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

log = logging.getLogger("slicewise.train")

Box = tuple[tuple[int, int, int], tuple[int, int, int]]


def parse_scale(text: str | Sequence[float]) -> tuple[float, float, float]:
    """ "0.5,0.25,0.25" (D, H, W) -> (0.5, 0.25, 0.25); each in (0, 1]."""
    parts = [float(p) for p in (text.split(",") if isinstance(text, str) else text)]
    if len(parts) != 3 or not all(0 < p <= 1 for p in parts):
        raise ValueError(f"locator_scale must be three factors in (0, 1] as 'D,H,W', got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def pad_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad after the data up to `shape` (never crops)."""
    pads = [(0, max(0, int(t) - s)) for s, t in zip(array.shape, shape, strict=True)]
    return np.pad(array, pads) if any(p[1] for p in pads) else array


def low_shape(shape: Sequence[int], scale: Sequence[float]) -> tuple[int, int, int]:
    return tuple(max(1, int(round(s * f))) for s, f in zip(shape, scale, strict=True))  # type: ignore[return-value]


def downscale(array: np.ndarray, scale: Sequence[float], label: bool = False) -> np.ndarray:
    """Trilinear for images; for labels, the share of foreground per low-res voxel > 0.25 (area)."""
    size = low_shape(array.shape, scale)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    if label:
        return (F.interpolate(tensor, size=size, mode="area")[0, 0] > 0.25).numpy().astype(np.uint8)
    return F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def bounding_box(mask: np.ndarray) -> Box | None:
    """Inclusive (lo, hi) of the non-zero voxels, or None."""
    where = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(w.size == 0 for w in where):
        return None
    return tuple(int(w[0]) for w in where), tuple(int(w[-1]) for w in where)  # type: ignore[return-value]


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(np.uint8)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return (labels == int(np.argmax(sizes)) + 1).astype(np.uint8)


def scale_box_up(box: Box, scale: Sequence[float], full_shape: Sequence[int]) -> Box:
    """A low-resolution box back in full-resolution voxels (covering every full voxel it touches)."""
    lo = tuple(max(0, int(np.floor(v / f))) for v, f in zip(box[0], scale, strict=True))
    hi = tuple(
        min(int(n) - 1, int(np.ceil((v + 1) / f)) - 1)
        for v, f, n in zip(box[1], scale, full_shape, strict=True)
    )
    return lo, hi  # type: ignore[return-value]


def widen(box: Box, buffer: int, shape: Sequence[int]) -> Box:
    lo = tuple(max(0, v - buffer) for v in box[0])
    hi = tuple(min(int(n) - 1, v + buffer) for v, n in zip(box[1], shape, strict=True))
    return lo, hi  # type: ignore[return-value]


def extent(box: Box) -> tuple[int, int, int]:
    return tuple(h - lo + 1 for lo, h in zip(box[0], box[1], strict=True))  # type: ignore[return-value]


def crop_size_for(boxes: Sequence[Box], buffer: int, pad_shape: Sequence[int], multiple: int) -> list[int]:
    """One crop size for all: the largest widened box over the data, rounded up to `multiple`, at most
    the padded size."""
    largest = np.max([extent(b) for b in boxes], axis=0) + 2 * buffer
    rounded = -(-largest // multiple) * multiple
    return [int(min(r, p)) for r, p in zip(rounded, pad_shape, strict=True)]


def window(box: Box | None, size: Sequence[int], shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """A window of `size` (at least; grown to hold the box) centred on `box`, moved inside `shape`."""
    slices = []
    for axis in range(3):
        n = int(shape[axis])
        lo, hi = (0, n - 1) if box is None else (box[0][axis], box[1][axis])
        width = min(n, max(int(size[axis]), hi - lo + 1))
        start = int(round((lo + hi + 1) / 2 - width / 2))
        start = min(max(start, 0), n - width)
        slices.append(slice(start, start + width))
    return tuple(slices)  # type: ignore[return-value]


def inside_share(mask: np.ndarray, region: tuple[slice, slice, slice]) -> float:
    """Share of the mask's voxels inside `region` (1.0 for an empty mask)."""
    total = int(mask.sum())
    return 1.0 if total == 0 else float(mask[region].sum()) / total


# ---------------------------------------------------------------------------------------------
# Stage 1: the locator
# ---------------------------------------------------------------------------------------------


@dataclass
class LocatorData:
    images: np.ndarray  # (n, d, h, w) float32, downscaled padded volumes
    labels: np.ndarray  # (n, d, h, w) uint8


def train_locator(
    net: torch.nn.Module,
    data: LocatorData,
    settings: dict[str, Any],
    device: str,
    progress: Callable[[str], Any] = log.info,
) -> list[float]:
    """Dice loss, Adam (locator_lr), ReduceLROnPlateau on the epoch loss (patience 15, factor 0.85),
    horizontal flips and noise; seeded: the same settings give the same weights. Returns epoch losses."""
    from core.models.vnet.losses import dice_loss_fn

    seed, epochs = int(settings["seed"]), int(settings["locator_epochs"])
    batch = max(1, int(settings["locator_batch_size"]))
    generator = torch.Generator().manual_seed(seed * 7919 + 17)
    net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=float(settings["locator_lr"]))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=float(settings["locator_lr_factor"]),
        patience=int(settings["locator_lr_patience"]),
    )
    loss_fn = dice_loss_fn()
    images = torch.from_numpy(data.images)[:, None]
    labels = torch.from_numpy(data.labels.astype(np.float32))[:, None]
    noise = float(settings["noise_std"])
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            x, y = images[idx].clone(), labels[idx].clone()
            if settings.get("augment", True):
                flip = torch.rand(len(idx), generator=generator) < 0.5
                x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
                x += noise * torch.randn(x.shape, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append(total / len(images))
        scheduler.step(history[-1])
        if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            progress(f"locator epoch {epoch + 1}/{epochs}: Dice loss {history[-1]:.4f}")
    net.eval()
    return history


@torch.no_grad()
def locator_probability(net: torch.nn.Module, low: np.ndarray, device: str) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))[None, None].to(device)
    return torch.sigmoid(net(x).float())[0, 0].cpu().numpy()


def locate(
    net: torch.nn.Module, padded: np.ndarray, scale: Sequence[float], device: str, threshold: float = 0.5
) -> tuple[Box | None, np.ndarray]:
    """The structure's box in full-resolution voxels of `padded` (largest component of the locator's
    mask), or None when the locator finds nothing; also the low-resolution mask."""
    low_mask = locator_probability(net, downscale(padded, scale), device) > threshold
    low_mask = largest_component(low_mask)
    box = bounding_box(low_mask)
    return (None if box is None else scale_box_up(box, scale, padded.shape)), low_mask


# ---------------------------------------------------------------------------------------------
# Both stages on one volume
# ---------------------------------------------------------------------------------------------


@dataclass
class Segmentation:
    mask: np.ndarray  # uint8, the input's shape
    window: tuple[slice, slice, slice]  # the segmented region in the (padded) volume
    located: Box | None
    sliding_window: bool


@torch.no_grad()
def segment_region(
    net: torch.nn.Module, patch: np.ndarray, crop_size: Sequence[int], device: str
) -> np.ndarray:
    """Foreground probability of a patch: one pass when it has the crop size, else a sliding window of
    crop-size tiles (MONAI, Gaussian-weighted, 25 % overlap)."""
    x = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None, None].to(device)
    if tuple(patch.shape) == tuple(int(c) for c in crop_size):
        return torch.sigmoid(net(x).float())[0, 0].cpu().numpy()
    from monai.inferers import sliding_window_inference

    roi = [min(int(c), s) for c, s in zip(crop_size, patch.shape, strict=True)]
    logits = sliding_window_inference(
        x, roi_size=roi, sw_batch_size=1, predictor=net, overlap=0.25, mode="gaussian"
    )
    return torch.sigmoid(logits.float())[0, 0].cpu().numpy()


def segment_volume(
    model: torch.nn.Module, image: np.ndarray, description: dict[str, Any], device: str
) -> Segmentation:
    """Pad, locate, crop (widened by the buffer, one crop size), segment, place back, remove the padding.

    `image` is normalised (data.normalise). A volume larger than the training pad size keeps its size
    (the locator is fully convolutional at the same voxel scale) and a region larger than the crop
    size is segmented with a sliding window.
    """
    shape = image.shape
    pad_shape = [max(int(p), s) for p, s in zip(description["pad_size"], shape, strict=True)]
    padded = pad_to(image, pad_shape)
    scale = parse_scale(description["locator_scale"])
    located, _ = locate(model.locator, padded, scale, device)
    region = None if located is None else widen(located, int(description["buffer"]), pad_shape)
    where = window(region, description["crop_size"], pad_shape)
    patch = padded[where]
    probability = segment_region(model.segmenter, patch, description["crop_size"], device)
    full = np.zeros(pad_shape, np.uint8)
    full[where] = probability > float(description.get("threshold", 0.5))
    if description.get("largest_component", True):
        full = largest_component(full)
    mask = np.ascontiguousarray(full[: shape[0], : shape[1], : shape[2]])
    return Segmentation(mask, where, located, tuple(patch.shape) != tuple(description["crop_size"]))
