"""Segmentation losses of SPEC 5D: Dice, focal, boundary and the hybrid Dice + boundary schedule.

Dice (Milletari et al. 2016) and focal (Lin et al. 2017) are MONAI's. The boundary loss is Kervadec et
al. 2019, "Boundary loss for highly unbalanced segmentation": the mean over voxels of the ground truth's
signed distance map times the predicted foreground probability. Its hybrid with Dice, L = Dice + w * B,
gives the boundary term weight w = 0 until a Dice threshold or an epoch is reached, then w grows by
`step` per epoch up to `max_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

LOSSES = ("dice", "focal", "boundary", "hybrid")


def signed_distance(label: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Signed distance map of a binary label: outside, the distance to the nearest foreground voxel
    (> 0); inside, minus (the distance to the nearest background voxel - one voxel), so the foreground's
    border voxels are 0 and deeper voxels negative. All zeros for an empty or full label.

    Distances in voxels, or in mm along each axis when `spacing` is given (then "one voxel" is the
    smallest spacing).
    """
    fg = np.asarray(label) > 0
    if not fg.any() or fg.all():
        return np.zeros(fg.shape, np.float32)
    outside = ndimage.distance_transform_edt(~fg, sampling=spacing)
    inside = ndimage.distance_transform_edt(fg, sampling=spacing)
    step = min(spacing) if spacing is not None else 1.0
    return np.where(fg, -(inside - step), outside).astype(np.float32)


def boundary_loss(probability: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """mean(phi_G * p): lowest when p is 1 exactly where phi_G < 0 (inside the truth)."""
    return (probability * distance).mean()


def dice_loss_fn():
    """1 - 2 sum(pg) / (sum(p) + sum(g) + eps), on sigmoid probabilities, over the whole batch."""
    from monai.losses import DiceLoss

    return DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, batch=True)


def focal_loss_fn(alpha: float, gamma: float):
    from monai.losses import FocalLoss

    return FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False)


@dataclass
class HybridSchedule:
    """The boundary weight per epoch: 0 until `start`, then min(max_weight, step * (epoch - start + 1)).

    `start` is `start_epoch`, or earlier: the epoch after the first validation Dice >= `dice_threshold`
    (`observe` records it). `started_at` is part of the training state (saved in checkpoints).
    """

    start_epoch: int = 10
    dice_threshold: float = 0.7
    step: float = 0.01
    max_weight: float = 1.0
    started_at: int | None = None

    def start(self) -> int:
        return self.start_epoch if self.started_at is None else min(self.started_at, self.start_epoch)

    def observe(self, epoch: int, val_dice: float) -> None:
        if self.started_at is None and val_dice >= self.dice_threshold:
            self.started_at = epoch + 1

    def weight(self, epoch: int) -> float:
        start = self.start()
        if epoch < start:
            return 0.0
        return float(min(self.max_weight, self.step * (epoch - start + 1)))


class SegmentationLoss:
    """Callable (logits, target, distance, epoch) -> loss for one of LOSSES."""

    def __init__(
        self, kind: str, alpha: float = 0.25, gamma: float = 2.0, schedule: HybridSchedule | None = None
    ) -> None:
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {LOSSES}")
        self.kind = kind
        self.dice = dice_loss_fn()
        self.focal = focal_loss_fn(alpha, gamma) if kind == "focal" else None
        self.schedule = schedule or HybridSchedule()

    @property
    def needs_distance(self) -> bool:
        return self.kind in ("boundary", "hybrid")

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, distance: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        if self.kind == "dice":
            return self.dice(logits, target)
        if self.kind == "focal":
            return self.focal(logits, target)
        if distance is None:
            raise ValueError(f"the {self.kind} loss needs the signed distance map of the truth")
        boundary = boundary_loss(torch.sigmoid(logits), distance.float())
        if self.kind == "boundary":
            return boundary
        return self.dice(logits, target) + self.schedule.weight(epoch) * boundary
