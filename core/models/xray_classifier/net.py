"""The classifier network (SPEC 5B) and the image -> network input steps shared by training and prediction.

torchvision ResNet (He et al., 2016) with its fully connected layer replaced by Linear(C, classes)
and a log-softmax; `features(x)` gives the layer4 activations that CAM weights with the head's row
of a class (Zhou et al., 2016, "Learning Deep Features for Discriminative Localization").
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from core.models.imagenet import read_imagenet_state

log = logging.getLogger("slicewise.models.xray_classifier")

FAMILY = "xray_classifier"
BACKBONES = ("resnet152", "resnet50", "resnet18")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class XrayClassifier(nn.Module):
    """ResNet backbone, head Linear(2048 or 512, n_classes), log-softmax output."""

    def __init__(self, backbone: str = "resnet152", n_classes: int = 2, image_size: int = 224) -> None:
        super().__init__()
        from torchvision import models

        if backbone not in BACKBONES:
            raise ValueError(f"unknown X-ray classifier backbone {backbone!r}; use one of {BACKBONES}")
        self.backbone_name = backbone
        self.image_size = int(image_size)
        self.net = getattr(models, backbone)(weights=None)
        self.net.fc = nn.Linear(self.net.fc.in_features, int(n_classes))

    @property
    def head(self) -> nn.Linear:
        return self.net.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """layer4 activations (batch, C, h, w): 2048x7x7 for ResNet-152 at 224."""
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.net.avgpool(feats), 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(x), dim=1)

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head]


class LogitsView(nn.Module):
    """The classifier's logits, for Grad-CAM (gradients of the class score before the softmax)."""

    def __init__(self, model: XrayClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)


def model_args(settings: dict[str, Any], n_classes: int) -> dict[str, Any]:
    backbone = str(settings["backbone"])
    if backbone not in BACKBONES:
        raise ValueError(f"unknown X-ray classifier backbone {backbone!r}; use one of {BACKBONES}")
    return {"backbone": backbone, "n_classes": int(n_classes), "image_size": int(settings["image_size"])}


def build_model(backbone: str = "resnet152", n_classes: int = 2, image_size: int = 224) -> XrayClassifier:
    return XrayClassifier(backbone, n_classes, image_size)


# ---------------------------------------------------------------- pretrained weights


def load_imagenet_weights(model: XrayClassifier, weights_path: str = "") -> str:
    """ImageNet weights into the backbone from a local file or the torchvision cache; never downloads.

    Returns a one-line notice (also logged); without a local file the network keeps its random
    initialisation and the notice says it trains from scratch.
    """
    name = model.backbone_name
    state, source = read_imagenet_state(name, weights_path)
    if state is None:
        return source
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.net.load_state_dict(state, strict=False)
    notice = f"ImageNet weights for {name} from {source} ({len(missing)} new tensors: the head)"
    if unexpected:
        notice += f"; ignored {len(unexpected)} unexpected tensors"
    log.info(notice)
    return notice


# ---------------------------------------------------------------- input


def grey_unit(array: np.ndarray) -> np.ndarray:
    """A 2D image in its own units (8/16-bit, DICOM values) -> float32 [0, 1] by its 0.5-99.5 percentiles.

    The same for every bit depth, so an 8-bit PNG and a 16-bit PNG of one radiograph match.
    """
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[0]
    step = max(1, int(np.ceil(np.sqrt(arr.size / 1e6))))  # percentiles on <= ~1 M samples
    sample = arr[::step, ::step]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.float32)
    lo, hi = np.percentile(finite, (0.5, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    out = (np.nan_to_num(arr, nan=lo) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def eval_geometry(image_size: int, crop_fraction: float) -> tuple[int, int]:
    """(resize, crop) sizes of the evaluation transform: resize to a square, center crop image_size."""
    crop = int(image_size)
    fraction = min(max(float(crop_fraction), 0.1), 1.0)
    return max(crop, int(round(crop / fraction))), crop


def resize_square(grey: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(y, x) [0, 1] -> (size, size) float32 tensor, bilinear with antialiasing."""
    t = torch.as_tensor(grey, dtype=torch.float32)[None, None]
    if tuple(t.shape[-2:]) != (size, size):
        t = torch.nn.functional.interpolate(
            t, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return t[0, 0].clamp(0, 1)


def center_crop(t: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return t[..., top : top + crop, left : left + crop]


def eval_image(grey: np.ndarray, image_size: int, crop_fraction: float) -> torch.Tensor:
    """[0, 1] grey -> (image_size, image_size) grey tensor: resize, then center crop (SPEC 5B eval)."""
    resize, crop = eval_geometry(image_size, crop_fraction)
    return center_crop(resize_square(grey, resize), crop)


def to_network(grey_batch: torch.Tensor) -> torch.Tensor:
    """(n, S, S) or (n, 1, S, S) grey in [0, 1] -> (n, 3, S, S) normalised with ImageNet mean/std."""
    x = grey_batch.float()
    if x.ndim == 3:
        x = x[:, None]
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std
