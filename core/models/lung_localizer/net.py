"""Lung localizer: one axial CT slice -> one box (Xmin, Ymin, Xmax, Ymax) covering both lungs.

SPEC 5A, after the reference lung-box regressor: torchvision ResNet-50 (He et al., 2016)
with a 1-channel 7x7 stem and a two-layer head, outputs clamped to [0, image_size]; a
second backbone, EfficientNet-B0 (Tan & Le, 2019), and an ensemble that averages the
two networks' boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.models.imagenet import read_imagenet_state

log = logging.getLogger("slicewise.models.lung_localizer")

FAMILY = "lung_localizer"
BACKBONES = ("resnet50", "efficientnet_b0", "resnet18", "ensemble")
ENSEMBLE_MEMBERS = ("resnet50", "efficientnet_b0")
HEAD_HIDDEN = 1024


def _box_head(in_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, HEAD_HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(HEAD_HIDDEN, 4),
    )


def _resnet_backbone(name: str, dropout: float) -> nn.Module:
    from torchvision import models

    net = getattr(models, name)(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = _box_head(net.fc.in_features, dropout)
    return net


def _efficientnet_backbone(dropout: float) -> nn.Module:
    from torchvision import models

    net = models.efficientnet_b0(weights=None)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(
        1,
        stem.out_channels,
        kernel_size=stem.kernel_size,
        stride=stem.stride,
        padding=stem.padding,
        bias=False,
    )
    net.classifier = _box_head(1280, dropout)
    return net


class LungBoxRegressor(nn.Module):
    """A backbone with a 4-number head; boxes in pixels of the (square) input, clamped to [0, image_size]."""

    def __init__(self, backbone: str = "resnet50", image_size: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        if backbone not in ("resnet50", "resnet18", "efficientnet_b0"):
            raise ValueError(f"unknown lung localizer backbone {backbone!r}; use one of {BACKBONES}")
        self.backbone_name = backbone
        self.image_size = int(image_size)
        self.net = (
            _efficientnet_backbone(dropout)
            if backbone == "efficientnet_b0"
            else _resnet_backbone(backbone, dropout)
        )

    @property
    def head_out(self) -> nn.Linear:
        head = self.net.classifier if self.backbone_name == "efficientnet_b0" else self.net.fc
        return head[-1]

    def member_boxes(self, x: torch.Tensor) -> torch.Tensor:
        """(1, batch, 4): the same layout as the ensemble's, for one loss function."""
        return self(x).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0.0, float(self.image_size))


class LungBoxEnsemble(nn.Module):
    """Several regressors on the same input; the prediction is the mean of their boxes."""

    def __init__(
        self, members: Sequence[str] = ENSEMBLE_MEMBERS, image_size: int = 512, dropout: float = 0.2
    ):
        super().__init__()
        self.image_size = int(image_size)
        self.members = nn.ModuleList(LungBoxRegressor(m, image_size, dropout) for m in members)

    def member_boxes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_boxes(x).mean(dim=0)


def model_args(settings: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments (plain types, stored in checkpoints) from the family's settings."""
    backbone = str(settings["backbone"])
    if backbone not in BACKBONES:
        raise ValueError(f"unknown lung localizer backbone {backbone!r}; use one of {BACKBONES}")
    args: dict[str, Any] = {
        "backbone": backbone,
        "image_size": int(settings["image_size"]),
        "dropout": float(settings["dropout"]),
    }
    if backbone == "ensemble":
        args["members"] = list(ENSEMBLE_MEMBERS)
    return args


def build_model(
    backbone: str = "resnet50",
    image_size: int = 512,
    dropout: float = 0.2,
    members: Sequence[str] | None = None,
) -> nn.Module:
    """The network for `model_args(...)`; `backbone="ensemble"` builds every member."""
    if backbone == "ensemble":
        return LungBoxEnsemble(members or ENSEMBLE_MEMBERS, image_size, dropout)
    return LungBoxRegressor(backbone, image_size, dropout)


def regressors(model: nn.Module) -> list[LungBoxRegressor]:
    return list(model.members) if isinstance(model, LungBoxEnsemble) else [model]  # type: ignore[list-item]


# ---------------------------------------------------------------- pretrained weights


def _one_channel(state: dict[str, torch.Tensor], key: str) -> None:
    """RGB stem weights -> 1-channel stem: the mean over the colour axis."""
    if key in state and state[key].ndim == 4 and state[key].shape[1] == 3:
        state[key] = state[key].mean(dim=1, keepdim=True)


def load_imagenet_weights(regressor: LungBoxRegressor, weights_path: str = "") -> str:
    """Load ImageNet weights into the backbone from a local file or the torchvision cache.

    Never downloads. Returns a one-line notice of what happened (also logged); without a
    local file the network keeps its random initialisation and the notice says so.
    """
    name = regressor.backbone_name
    state, source = read_imagenet_state(name, weights_path)
    if state is None:
        return source
    stem = "features.0.0.weight" if name == "efficientnet_b0" else "conv1.weight"
    _one_channel(state, stem)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    missing, unexpected = regressor.net.load_state_dict(state, strict=False)
    notice = f"ImageNet weights for {name} from {source} (stem averaged to 1 channel; {len(missing)} new)"
    if unexpected:
        notice += f"; ignored {len(unexpected)} unexpected tensors"
    log.info(notice)
    return notice


def init_head_bias(model: nn.Module, mean_box_px: Sequence[float]) -> None:
    """Start every head at the mean training box: the network then learns the deviations."""
    with torch.no_grad():
        for reg in regressors(model):
            reg.head_out.bias.copy_(torch.as_tensor(mean_box_px, dtype=reg.head_out.bias.dtype))
            reg.head_out.weight.mul_(0.1)


# ---------------------------------------------------------------- input


def resize_slices(slices: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 1, h, w) -> (n, 1, size, size), bilinear with antialiasing (as prepare.resize_square)."""
    if tuple(slices.shape[-2:]) == (size, size):
        return slices
    return torch.nn.functional.interpolate(
        slices, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def prepare_input(volume: Any, meta: dict[str, Any]) -> torch.Tensor:
    """Volume (HU) -> (z, 1, S, S) float32 network input normalised with the training stats."""
    from core.models.lung_localizer.prepare import (
        lung_window_normalised,  # the prepare step's exact windowing
    )

    slices = torch.from_numpy(lung_window_normalised(volume.array)).unsqueeze(1)
    slices = resize_slices(slices, int(meta["image_size"]))
    return (slices - float(meta["mean"])) / float(meta["std"])
