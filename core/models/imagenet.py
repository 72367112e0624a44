"""Local ImageNet weights for torchvision backbones, shared by the families: never downloaded.

`read_imagenet_state(backbone, weights_path)` finds the file (the given path, else torchvision's
hub cache) and returns its state dict, or None with the notice that training starts from scratch.
Each family then adapts the stem and drops its head itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger("slicewise.models")

# torchvision's file names of the ImageNet weights in the hub cache
IMAGENET_FILES: dict[str, tuple[str, ...]] = {
    "resnet152": ("resnet152-394f9c45.pth", "resnet152-f82ba261.pth"),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
    "resnet18": ("resnet18-f37072fd.pth",),
    "efficientnet_b0": ("efficientnet_b0_rwightman-7f5810bc.pth",),
}


def hub_folder() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_imagenet_file(backbone: str) -> Path | None:
    """The backbone's ImageNet file in the torchvision cache, else None."""
    for name in IMAGENET_FILES.get(backbone, ()):
        if (hub_folder() / name).is_file():
            return hub_folder() / name
    return None


def read_imagenet_state(backbone: str, weights_path: str = "") -> tuple[dict | None, str]:
    """(state dict, file) of the local ImageNet weights, or (None, notice) when there are none; the
    notice is logged as a warning."""
    path = Path(weights_path).expanduser() if weights_path else cached_imagenet_file(backbone)
    if path is None or not path.is_file():
        where = weights_path or str(hub_folder())
        notice = (f"no ImageNet weights for {backbone} at {where} (offline, never downloaded): "
                  "training from scratch")
        log.warning(notice)
        return None, notice
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return dict(state), str(path)
