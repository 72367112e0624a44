"""ResNet-18 with a 4-channel stem (FLAIR, T1, T1ce, T2) and a 2-way head (SPEC 5E); Grad-CAM.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (torchvision's resnet18).
Grad-CAM: Selvaraju et al., ICCV 2017 -- the class score's gradient, averaged over a stage's
feature map, weights that map's channels; ReLU of the weighted sum, upsampled to the slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

FAMILY = "brain_mri"
IN_CHANNELS = 4
NUM_CLASSES = 2


def model_args(settings: dict[str, Any]) -> dict[str, Any]:
    return {"in_channels": IN_CHANNELS, "num_classes": NUM_CLASSES, "image_size": int(settings["image_size"])}


def build_model(
    in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES, image_size: int = 240
) -> nn.Module:
    """torchvision ResNet-18 (weights=None), conv1 taking `in_channels`, fc Linear(512, num_classes)."""
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(512, num_classes)
    return model


def load_imagenet_weights(model: nn.Module, path: str) -> str:
    """Load a local ImageNet ResNet-18 state dict: the stem's RGB filters averaged into each of the 4
    channels (scaled by 3/4, so a grey input keeps its activation scale); the head stays new."""
    if not path:
        return "no weights_path: training from scratch"
    file = Path(path).expanduser()
    if not file.is_file():
        return f"{file}: weights file not found; training from scratch"
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    stem = state.get("conv1.weight")
    if stem is not None and stem.shape[1] != model.conv1.in_channels:
        mean = stem.mean(dim=1, keepdim=True)
        state["conv1.weight"] = mean.repeat(1, model.conv1.in_channels, 1, 1) * 3.0 / model.conv1.in_channels
    missing, unexpected = model.load_state_dict(state, strict=False)
    extra = [k for k in missing if not k.startswith("fc.")]
    if extra or unexpected:
        return f"{file}: partly loaded (missing {extra[:3]}, unexpected {list(unexpected)[:3]})"
    return f"{file}: ImageNet weights loaded (head new)"


def grad_cam(
    model: nn.Module, x: torch.Tensor, layer: str = "layer4", target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax probabilities (n, classes), Grad-CAM (n, H, W) >= 0 at the input's size, not normalised).

    `target`: the class per sample (default: the predicted one). The model must be in eval mode
    (BatchNorm then keeps samples independent, so one backward gives every sample's gradient).
    """
    stage = getattr(model, layer)
    saved: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        saved["a"] = output

    handle = stage.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)
            chosen = logits.argmax(dim=1) if target is None else target
            model.zero_grad(set_to_none=True)
            logits.gather(1, chosen[:, None]).sum().backward()
    finally:
        handle.remove()
    activations, grads = saved["a"], saved["a"].grad
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return torch.softmax(logits.detach().float(), dim=1), cam[:, 0].detach().float()
