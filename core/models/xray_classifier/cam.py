"""Heatmaps of where the classifier looked: CAM (SPEC 5B), Grad-CAM and Grad-CAM++ (monai.visualize).

Every method gives a map on the layer4 grid (7x7 at 224); `to_original` upsamples it bilinearly to
the image's original size (placing it over the part of the image the network saw, the center crop)
and normalises it to [0, 1] with the peak at 1. MONAI's own normaliser maps (min, max) to (1, 0),
which flips the map, so the MONAI classes run with identity upsampling and post-processing here.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from core.models.xray_classifier.net import LogitsView, XrayClassifier, eval_geometry

METHODS = ("cam", "gradcam", "gradcam++")


def cam_cells(features: torch.Tensor, head_weight: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al., 2016): layer4 activations (b, C, h, w) weighted by the head's row of each image's
    class (b,) and summed over C -> (b, h, w). The head's bias is the same everywhere and left out."""
    weights = head_weight[class_idx.long()].to(features.dtype)  # (b, C)
    return torch.einsum("bchw,bc->bhw", features, weights)


def normalise(heat: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1] with the peak at exactly 1; a flat map (nothing stands out) becomes all ones."""
    lo, hi = heat.min(), heat.max()
    if not torch.isfinite(hi - lo) or float(hi - lo) <= 1e-12 * max(1.0, float(hi.abs())):
        return torch.ones_like(heat)
    return ((heat - lo) / (hi - lo)).clamp_(0, 1)


def crop_window(shape: tuple[int, int], image_size: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) in original pixels of the part of the image the network saw."""
    h, w = int(shape[0]), int(shape[1])
    resize, crop = eval_geometry(image_size, crop_fraction)
    first = (resize - crop) // 2
    top, bottom = int(round(first / resize * h)), int(round((first + crop) / resize * h))
    left, right = int(round(first / resize * w)), int(round((first + crop) / resize * w))
    if bottom - top < 1 or right - left < 1:  # a tiny image: the map covers all of it
        return 0, h, 0, w
    return top, bottom, left, right


def to_original(
    cells: torch.Tensor, shape: tuple[int, int], image_size: int, crop_fraction: float = 1.0
) -> np.ndarray:
    """A (h, w) cell map -> float32 (H, W) heatmap in [0, 1], peak 1, over the image's original pixels.

    Bilinear upsampling (as SPEC 5B's x32 to 224, here straight to the original size) into the
    center-crop window; pixels outside it (never seen by the network) are 0.
    """
    h, w = int(shape[0]), int(shape[1])
    top, bottom, left, right = crop_window((h, w), image_size, crop_fraction)
    up = torch.nn.functional.interpolate(
        cells.detach().float()[None, None],
        size=(bottom - top, right - left),
        mode="bilinear",
        align_corners=False,
    )[0, 0]
    up = normalise(up)
    if (top, bottom, left, right) == (0, h, 0, w):
        return up.cpu().numpy().astype(np.float32)
    out = np.zeros((h, w), np.float32)
    out[top:bottom, left:right] = up.cpu().numpy()
    return out


class GradCams:
    """Grad-CAM and Grad-CAM++ through monai.visualize on a private copy of the network (MONAI keeps
    hooks on it), scoring each image's own class (MONAI's default scores a batch by one index)."""

    def __init__(self, model: XrayClassifier) -> None:
        import copy

        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self._cams: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _cam(self, method: str) -> Any:
        from monai.visualize import GradCAM, GradCAMpp

        if method not in self._cams:
            cls = {"gradcam": GradCAM, "gradcam++": GradCAMpp}[method]
            cam = cls(
                nn_module=LogitsView(self.model),
                target_layers="model.net.layer4",
                upsampler=lambda _size: lambda x: x,
                postprocessing=lambda x: x,
            )
            cam.nn_module.class_score = _per_image_score
            self._cams[method] = cam
        return self._cams[method]

    def cells(self, x: torch.Tensor, class_idx: torch.Tensor, method: str) -> torch.Tensor:
        """(b, h, w) maps for network inputs `x` (b, 3, S, S) and each image's class."""
        if method not in ("gradcam", "gradcam++"):
            raise ValueError(f"unknown Grad-CAM method {method!r}; use gradcam or gradcam++")
        with self._lock, torch.enable_grad():
            maps = self._cam(method).compute_map(x, class_idx=class_idx.long())
        return maps[:, 0].detach()


def _per_image_score(logits: torch.Tensor, class_idx: Any) -> torch.Tensor:
    """Each image's score for its own class, shaped (b, 1, 1, 1): summed for the backward pass, and
    broadcast against the (b, C, h, w) gradients in MONAI's Grad-CAM++ (its own (b,) score fits b=1 only)."""
    if isinstance(class_idx, torch.Tensor) and class_idx.ndim == 1:
        score = logits.gather(1, class_idx.view(-1, 1).to(logits.device))
    else:
        score = logits[:, int(class_idx)]
    return score.reshape(-1, 1, 1, 1)
