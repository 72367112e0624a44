"""Lung localizer: one axial CT slice -> one box (Xmin, Ymin, Xmax, Ymax) covering both lungs.

SPEC 5A, after the reference lung-box regressor: torchvision ResNet-50 (He et al., 2016)
with a 1-channel 7x7 stem and a two-layer head, outputs clamped to [0, image_size]; a
second backbone, EfficientNet-B0 (Tan & Le, 2019), and an ensemble that averages the
two networks' boxes.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger("slicewise.models.lung_localizer")

FAMILY = "lung_localizer"
BACKBONES = ("resnet50", "efficientnet_b0", "resnet18", "ensemble")
ENSEMBLE_MEMBERS = ("resnet50", "efficientnet_b0")
HEAD_HIDDEN = 1024
CSV_COLUMNS = ("Image", "Xmin", "Ymin", "Xmax", "Ymax", "Volume", "Slice", "Annotator", "Updated")

# torchvision file names of the ImageNet weights, looked up in the hub cache; never downloaded.
_IMAGENET_FILES = {
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
    "resnet18": ("resnet18-f37072fd.pth",),
    "efficientnet_b0": ("efficientnet_b0_rwightman-7f5810bc.pth",),
}


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


def _cached_imagenet_file(backbone: str) -> Path | None:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in _IMAGENET_FILES.get(backbone, ()):
        if (hub / name).is_file():
            return hub / name
    return None


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
    path = Path(weights_path).expanduser() if weights_path else _cached_imagenet_file(name)
    if path is None or not path.is_file():
        where = weights_path or f"{Path(torch.hub.get_dir()) / 'checkpoints'}"
        notice = (
            f"no ImageNet weights for {name} at {where} (offline, never downloaded): training from scratch"
        )
        log.warning(notice)
        return notice
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    stem = "features.0.0.weight" if name == "efficientnet_b0" else "conv1.weight"
    _one_channel(state, stem)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    missing, unexpected = regressor.net.load_state_dict(state, strict=False)
    notice = f"ImageNet weights for {name} from {path} (stem averaged to 1 channel; {len(missing)} new)"
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
    """(n, 1, h, w) -> (n, 1, size, size), bilinear with antialiasing (as core.prepare.resize_square)."""
    if tuple(slices.shape[-2:]) == (size, size):
        return slices
    return torch.nn.functional.interpolate(
        slices, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def prepare_input(volume: Any, meta: dict[str, Any]) -> torch.Tensor:
    """Volume (HU) -> (z, 1, S, S) float32 network input normalised with the training stats."""
    from core.prepare import lung_window_normalised  # the prepare step's exact windowing

    slices = torch.from_numpy(lung_window_normalised(volume.array)).unsqueeze(1)
    slices = resize_slices(slices, int(meta["image_size"]))
    return (slices - float(meta["mean"])) / float(meta["std"])


# ---------------------------------------------------------------- prediction


class LungBoxPredictor:
    """Boxes per slice from one checkpoint or an ensemble of several (their boxes averaged)."""

    family = FAMILY

    def __init__(self, members: list[tuple[nn.Module, dict[str, Any]]], device: str, name: str) -> None:
        self.members = members
        self.device = device
        self.name = name

    @torch.no_grad()
    def predict_volume(self, volume: Any, batch_size: int = 16) -> np.ndarray:
        """(z, 4) Xmin, Ymin, Xmax, Ymax as fractions of the slice width/height."""
        boxes = np.mean(
            [self._member_boxes(model, meta, volume, batch_size) for model, meta in self.members], axis=0
        )
        return boxes.astype(np.float32)

    def _member_boxes(
        self, model: nn.Module, meta: dict[str, Any], volume: Any, batch_size: int
    ) -> np.ndarray:
        inputs = prepare_input(volume, meta)
        out = []
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start : start + batch_size].to(self.device, non_blocking=True)
            out.append(model(batch).float().cpu())
        boxes = torch.cat(out).numpy() / float(meta["image_size"])
        return np.clip(boxes, 0.0, 1.0)


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str) -> LungBoxPredictor:
    """`payloads`: checkpoints' `slicewise` dicts with their `state_dict` (model weights only)."""
    members = []
    for payload in payloads:
        model = build_model(**payload["model_args"])
        model.load_state_dict(payload["state_dict"])
        model.to(device).eval()
        stats = payload["stats"]
        meta = {"image_size": payload["model_args"]["image_size"], "mean": stats["mean"], "std": stats["std"]}
        members.append((model, meta))
    return LungBoxPredictor(members, device, name)


def _ordered(box: Sequence[float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def write_predictions(
    predictor: LungBoxPredictor, volumes: Sequence[Any], out: Path, progress: Callable[[str], Any] = print
) -> Path:
    """One CSV row per slice in the lung_bbox.csv schema; the annotator is the model and checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lung_bbox_predicted.csv"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for volume in volumes:
            boxes = predictor.predict_volume(volume)
            for z, box in enumerate(boxes):
                x0, y0, x1, y1 = _ordered(box)
                writer.writerow(
                    [
                        volume.slice_ids[z],
                        f"{x0:.6f}",
                        f"{y0:.6f}",
                        f"{x1:.6f}",
                        f"{y1:.6f}",
                        volume.volume_id,
                        z,
                        predictor.name,
                        now,
                    ]
                )
            progress(f"{volume.volume_id}: {len(boxes)} slices predicted")
    tmp.replace(path)
    return path
