"""VNet (Milletari et al. 2016, "V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image
Segmentation") with a width setting, an optional bottleneck attention module (Park et al. 2018, "BAM:
Bottleneck Attention Module"), and the two-stage container (locator + segmenter) saved as one module.

SPEC 5D: k x k x k convolutions stride 1 (k = 5), 2x2x2 stride-2 convolutions down, 2x2x2 stride-2
transposed convolutions up, PReLU, residual stages. MONAI's `VNet` has the same layout but a fixed
first-stage width of 16 (45.6 M parameters); `network="monai"` uses it as is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FAMILY = "vnet"
DOWN_CONVS = (1, 2, 3, 2)  # residual convolutions per encoder stage below the input stage (as MONAI)
UP_CONVS = (2, 2, 1, 1)  # per decoder stage, deepest first


def _conv_bn_prelu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm3d(cout), nn.PReLU(cout)
    )


class BottleneckAttention(nn.Module):
    """BAM: x * (1 + sigmoid(channel(x) + spatial(x))); channel = squeeze + MLP (reduction r), spatial =
    1x1x1 reduce by r, two dilated 3x3x3 convolutions (dilation d), 1x1x1 to one map."""

    def __init__(self, channels: int, reduction: int = 4, dilation: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial = nn.Sequential(
            nn.Conv3d(channels, hidden, 1),
            nn.BatchNorm3d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm3d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, hidden, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm3d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = self.channel(x.mean(dim=(2, 3, 4)))[:, :, None, None, None]
        return x * (1 + torch.sigmoid(channel + self.spatial(x)))


class ResidualStage(nn.Module):
    """n (conv k, BN, PReLU) on top of `x`, added back to `x`, then PReLU."""

    def __init__(self, channels: int, n: int, k: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[_conv_bn_prelu(channels, channels, k) for _ in range(n)])
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + x)


class Down(nn.Module):
    def __init__(self, cin: int, n: int, k: int, attention: dict | None) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv3d(cin, 2 * cin, 2, stride=2, bias=False), nn.BatchNorm3d(2 * cin), nn.PReLU(2 * cin)
        )
        self.stage = ResidualStage(2 * cin, n, k)
        self.attention = BottleneckAttention(2 * cin, **attention) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stage(self.down(x))
        return self.attention(out) if self.attention is not None else out


class Up(nn.Module):
    def __init__(self, cin: int, cskip: int, n: int, k: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose3d(cin, cskip, 2, stride=2, bias=False), nn.BatchNorm3d(cskip), nn.PReLU(cskip)
        )
        self.stage = ResidualStage(2 * cskip, n, k)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.stage(torch.cat([self.up(x), skip], dim=1))


class VNet(nn.Module):
    """One-channel in, one logit out; any input size (padded inside to a multiple of 2**levels)."""

    def __init__(
        self,
        width: int = 16,
        levels: int = 4,
        kernel_size: int = 5,
        attention: bool = False,
        attention_reduction: int = 4,
        attention_dilation: int = 4,
    ) -> None:
        super().__init__()
        if not 1 <= levels <= len(DOWN_CONVS) or width < 1 or kernel_size % 2 != 1:
            raise ValueError(
                f"VNet needs 1..{len(DOWN_CONVS)} levels, width >= 1 and an odd kernel; got "
                f"levels={levels}, width={width}, kernel_size={kernel_size}"
            )
        self.levels = levels
        self.stem = nn.Sequential(
            nn.Conv3d(1, width, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm3d(width)
        )
        self.stem_act = nn.PReLU(width)
        att = {"reduction": attention_reduction, "dilation": attention_dilation} if attention else None
        channels = [width * 2**i for i in range(levels + 1)]
        self.downs = nn.ModuleList(
            Down(channels[i], DOWN_CONVS[i], kernel_size, att if i == levels - 1 else None)
            for i in range(levels)
        )
        ups = UP_CONVS[len(UP_CONVS) - levels :]
        self.ups = nn.ModuleList(
            Up(
                channels[levels] if i == levels - 1 else 2 * channels[i + 1],
                channels[i],
                ups[levels - 1 - i],
                kernel_size,
            )
            for i in reversed(range(levels))
        )
        self.head = nn.Conv3d(2 * width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[2:]
        multiple = 2**self.levels
        pad = [(-s) % multiple for s in shape]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        out = self.stem_act(self.stem(x) + x)  # the one input channel broadcasts over `width`
        skips = [out]
        for down in self.downs:
            out = down(out)
            skips.append(out)
        skips.pop()
        for up in self.ups:
            out = up(out, skips.pop())
        logits = self.head(out)
        return logits[:, :, : shape[0], : shape[1], : shape[2]]


class MonaiVNet(nn.Module):
    """MONAI's VNet (first-stage width fixed at 16, ELU -> PReLU per SPEC), padded like `VNet`."""

    def __init__(self, **_: Any) -> None:
        super().__init__()
        from monai.networks.nets import VNet as _MonaiVNet

        self.net = _MonaiVNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            act="prelu",
            dropout_prob_down=None,
            dropout_prob_up=(None, 0.0),
        )
        self.levels = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[2:]
        pad = [(-s) % 16 for s in shape]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        return self.net(x)[:, :, : shape[0], : shape[1], : shape[2]]


def build_network(network: str = "vnet", **kwargs: Any) -> nn.Module:
    if network == "monai":
        return MonaiVNet(**kwargs)
    if network != "vnet":
        raise ValueError(f"unknown network {network!r}; use 'vnet' or 'monai'")
    return VNet(**kwargs)


class TwoStage(nn.Module):
    """Both networks in one module, so one checkpoint (`model.locator.*`, `model.segmenter.*`) holds both."""

    def __init__(self, locator: dict[str, Any], segmenter: dict[str, Any]) -> None:
        super().__init__()
        self.locator = build_network(**locator)
        self.segmenter = build_network(**segmenter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(x)


def network_args(settings: dict[str, Any], stage: str) -> dict[str, Any]:
    """Constructor arguments of one stage's network from the family settings."""
    width = int(settings["locator_width"] if stage == "locator" else settings["width"])
    return {
        "network": str(settings.get("network", "vnet")),
        "width": width,
        "levels": int(settings["levels"]),
        "kernel_size": int(settings["kernel_size"]),
        "attention": bool(settings["attention"]) and stage == "segmenter",
        "attention_reduction": int(settings.get("attention_reduction", 4)),
        "attention_dilation": int(settings.get("attention_dilation", 4)),
    }


def model_args(settings: dict[str, Any]) -> dict[str, Any]:
    return {"locator": network_args(settings, "locator"), "segmenter": network_args(settings, "segmenter")}


def build_model(locator: dict[str, Any], segmenter: dict[str, Any]) -> TwoStage:
    return TwoStage(locator, segmenter)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
