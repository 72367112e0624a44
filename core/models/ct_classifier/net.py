"""The 3D CNN of SPEC 5C and the geometry that maps its last conv block back onto the input.

Zunair et al., "Uniformizing Techniques to Process CT scans with 3D CNNs for Tuberculosis
Prediction" (2020), as in the Keras "3D image classification from CT scans" example: four blocks of
Conv3d(k=3) + ReLU, MaxPool3d(2), BatchNorm (64, 64, 128, 256 filters), global average pooling,
Dense 512 + ReLU, Dropout 0.3, one output. The network returns the logit; the sigmoid is applied by
the loss (BCE with logits, the numerically stable form of sigmoid + BCE) and by the predictor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FAMILY = "ct_classifier"
REFERENCE_FILTERS = (64, 64, 128, 256)
PADDINGS = ("valid", "same")


def model_args(settings: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments recorded in every checkpoint."""
    return {
        "width": float(settings["width"]),
        "dense": int(settings["dense"]),
        "dropout": float(settings["dropout"]),
        "padding": str(settings["padding"]),
        "depth": int(settings["depth"]),
        "size": int(settings["size"]),
    }


def block_filters(width: float) -> tuple[int, ...]:
    return tuple(max(1, round(f * width)) for f in REFERENCE_FILTERS)


class CTClassifier3D(nn.Module):
    """Input (n, 1, depth, size, size) in [0, 1]; output (n,) logits of "abnormal"."""

    def __init__(self, width: float = 1.0, dense: int = 512, dropout: float = 0.3, padding: str = "valid",
                 depth: int = 64, size: int = 128) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.padding = padding
        blocks, channels = [], 1
        for filters in block_filters(width):
            blocks.append(nn.Sequential(
                nn.Conv3d(channels, filters, 3, padding=1 if padding == "same" else 0),
                nn.ReLU(inplace=False),
                nn.MaxPool3d(2),
                nn.BatchNorm3d(filters),
            ))
            channels = filters
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(
            nn.Linear(channels, dense), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dense, 1)
        )
        check_input_shape((depth, size, size), padding)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3, 4))
        return self.head(pooled).squeeze(1)

    @property
    def last_conv_activation(self) -> nn.Module:
        """The ReLU after the last convolution: Grad-CAM's layer (before its pooling)."""
        return self.blocks[-1][1]


def build_model(**kwargs: Any) -> CTClassifier3D:
    return CTClassifier3D(**kwargs)


def _axis_sizes(n: int, padding: str) -> list[int]:
    """Length of one axis after each conv and each pool (conv, pool, conv, pool, ...)."""
    sizes = []
    for _ in REFERENCE_FILTERS:
        n = n if padding == "same" else n - 2
        sizes.append(n)
        n //= 2
        sizes.append(n)
    return sizes


def check_input_shape(shape: tuple[int, int, int], padding: str) -> None:
    """A ValueError when an input of `shape` (depth, h, w) vanishes inside the network."""
    for n in shape:
        if min(_axis_sizes(int(n), padding)) < 1:
            raise ValueError(
                f"input {tuple(shape)} is too small for the network with padding={padding!r} "
                f"(an axis of {n} vanishes after four conv+pool blocks; use padding='same' or larger "
                "depth/size)")


def cam_cell_centres(padding: str) -> tuple[float, float]:
    """(position of the last conv block's cell 0 centre, spacing between cells), in input voxels.

    A 'valid' 3x3x3 conv shifts the centre by one voxel; a 2x pool maps cell j onto 2j + 0.5.
    The Grad-CAM layer is the last conv's output, i.e. after three pools and four convs.
    """
    shift = 0.0 if padding == "same" else 1.0
    offset, step = shift, 1.0  # of the last conv's output, built from the input outwards
    for _ in range(3):
        # conv then pool: input coordinate of a pooled cell j = step * (2j + 0.5) + offset
        offset, step = offset + step * 0.5, step * 2
        offset += step * shift
    return offset, step
