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


HEADS = ("regress", "profile")
PROFILE_STRIDE = 4  # one profile cell per 4 input pixels
_PROFILE_CHANNELS = {"resnet18": (64, 128, 256), "resnet50": (256, 512, 1024)}


def _profile_head(channels: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(2 * channels, channels, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv1d(channels, 1, 5, padding=2),
    )


def interval_coverage(lo: torch.Tensor, hi: torch.Tensor, cells: int, cell: float) -> torch.Tensor:
    """(batch, cells): the share of each cell [i*cell, (i+1)*cell) that the interval [lo, hi) covers."""
    start = torch.arange(cells, dtype=lo.dtype, device=lo.device) * cell
    overlap = torch.minimum(hi[:, None], start + cell) - torch.maximum(lo[:, None], start)
    return (overlap / cell).clamp(0.0, 1.0)


def interval_from_profile(p: torch.Tensor, cell: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) in pixels from a (batch, cells) coverage profile in [0, 1]: counted out from its peak
    (lo = the uncovered share of the cells before the peak, hi = the peak's end plus the covered
    share after it), exact for a profile that is one interval's coverage."""
    cells = p.shape[1]
    index = torch.arange(cells, device=p.device)
    peak = p.argmax(dim=1, keepdim=True)
    lo = ((1.0 - p) * (index < peak)).sum(dim=1) * cell
    hi = (peak[:, 0] + 1).to(p.dtype) * cell + (p * (index > peak)).sum(dim=1) * cell
    return lo, hi


class LungBoxProfiles(nn.Module):
    """The box as two 1-D profiles: which columns and which rows the lung box covers.

    A ResNet trunk (stem and layers 1-3, ImageNet names under `net`), a small feature pyramid at
    stride 4, then per column (row) the max and mean of the features over the rows (columns) and a
    1-D convolution giving, per cell, the share covered by the box. Everything is translation
    equivariant, so a lung is found where it is, not where lungs were in training; the box is read
    back from the profiles (`interval_from_profile`). Loss: binary cross-entropy against the true
    box's coverage of each cell.
    """

    def __init__(self, backbone: str = "resnet18", image_size: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        if backbone not in _PROFILE_CHANNELS:
            raise ValueError(f"head 'profile' needs backbone resnet18 or resnet50, got {backbone!r}")
        from torchvision import models

        self.backbone_name = backbone
        self.image_size = int(image_size)
        net = getattr(models, backbone)(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.layer4, net.fc = nn.Identity(), nn.Identity()
        self.net = net
        width = 64
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in _PROFILE_CHANNELS[backbone])
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU(inplace=True))
        self.heads = nn.ModuleList([_profile_head(width, dropout), _profile_head(width, dropout)])

    def profiles(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(column logits (batch, W/4), row logits (batch, H/4))."""
        net = self.net
        f1 = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))
        f2 = net.layer2(f1)
        f3 = net.layer3(f2)
        size = f1.shape[-2:]
        up = lambda f: nn.functional.interpolate(f, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        fused = self.smooth(self.lateral[0](f1) + up(self.lateral[1](f2)) + up(self.lateral[2](f3)))
        columns = torch.cat([fused.amax(dim=2), fused.mean(dim=2)], dim=1)
        rows = torch.cat([fused.amax(dim=3), fused.mean(dim=3)], dim=1)
        return self.heads[0](columns)[:, 0], self.heads[1](rows)[:, 0]

    def boxes_from(self, logits_x: torch.Tensor, logits_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x0, x1 = interval_from_profile(torch.sigmoid(logits_x), width / logits_x.shape[1])
        y0, y1 = interval_from_profile(torch.sigmoid(logits_y), height / logits_y.shape[1])
        return torch.stack([x0, y0, x1, y1], dim=1).clamp(0.0, float(self.image_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.boxes_from(*self.profiles(x), x)

    def profile_loss(
        self, x: torch.Tensor, boxes: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, predicted boxes): BCE of each profile against the box's coverage of its cells."""
        logits_x, logits_y = self.profiles(x)
        height, width = x.shape[-2:]
        boxes = boxes.float()
        target_x = interval_coverage(boxes[:, 0], boxes[:, 2], logits_x.shape[1], width / logits_x.shape[1])
        target_y = interval_coverage(boxes[:, 1], boxes[:, 3], logits_y.shape[1], height / logits_y.shape[1])
        bce = nn.functional.binary_cross_entropy_with_logits
        per_slice = (bce(logits_x.float(), target_x, reduction="none").mean(dim=1)
                     + bce(logits_y.float(), target_y, reduction="none").mean(dim=1))
        if weights is not None:
            per_slice = per_slice * weights.float()
        return per_slice.mean(), self.boxes_from(logits_x.detach(), logits_y.detach(), x)


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
    head = str(settings.get("head", "regress"))
    if head not in HEADS:
        raise ValueError(f"unknown lung localizer head {head!r}; use one of {HEADS}")
    if head != "regress":  # the reference head is implied (checkpoints written before the setting load)
        if backbone not in _PROFILE_CHANNELS:
            raise ValueError(f"head {head!r} needs backbone resnet18 or resnet50, got {backbone!r}")
        args["head"] = head
    return args


def build_model(
    backbone: str = "resnet50",
    image_size: int = 512,
    dropout: float = 0.2,
    members: Sequence[str] | None = None,
    head: str = "regress",
) -> nn.Module:
    """The network for `model_args(...)`; `backbone="ensemble"` builds every member."""
    if head == "profile":
        return LungBoxProfiles(backbone, image_size, dropout)
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
            if not hasattr(reg, "head_out"):
                continue  # the profile head has no box bias
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
