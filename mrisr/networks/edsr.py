"""EDSR (Lim et al., CVPR-W 2017), the baseline variant, for one-channel MRI slices.

A pure ``nn.Module`` (no training logic): head conv, ``num_blocks`` residual blocks
(conv-ReLU-conv, output scaled by ``res_scale``), a body conv with a global skip, and a
pixel-shuffle upsampler to the integer scale ``s`` followed by a one-channel conv.
``(B, 1, h, w) -> (B, 1, s*h, s*w)``.

Differences from the reference code (``EDSR-PyTorch``), on purpose:

* no RGB ``MeanShift``: mrisr's intensities are already normalised per scan (foreground
  99.5th percentile = 1), and one channel has no dataset colour mean to remove;
* any integer scale: scales that are powers of two use x2 stages (as the reference), any
  other scale one pixel-shuffle stage (x3 as the reference, x5, ...).

Pixel-shuffle grid convention (the one the degradation models and the predictor use): LR
pixel ``i`` covers HR pixels ``s*i .. s*i+s-1``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mrisr.networks.registry import NETWORKS, NetworkSpec
from mrisr.utilities.scale import check_scale


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip (no batch norm, as EDSR)."""

    def __init__(self, features: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            _conv(features, features), nn.ReLU(inplace=True), _conv(features, features)
        )
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.res_scale != 1.0:
            y = y * self.res_scale
        return y + x


class Upsampler(nn.Sequential):
    """Conv to ``s^2`` times the features, then pixel shuffle (x2 stages for powers of 2)."""

    def __init__(self, scale: int, features: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [_conv(features, 4 * features), nn.PixelShuffle(2)]
        else:
            layers += [_conv(features, scale * scale * features), nn.PixelShuffle(scale)]
        super().__init__(*layers)


class EDSR(nn.Module):
    """Baseline EDSR: ``(B, in_channels, h, w) -> (B, in_channels, scale*h, scale*w)``."""

    def __init__(
        self,
        scale: int,
        num_blocks: int = 16,
        num_features: int = 64,
        res_scale: float = 1.0,
        in_channels: int = 1,
    ):
        super().__init__()
        check_scale(scale, "EDSR scale")
        if num_blocks < 1 or num_features < 1:
            raise ValueError("EDSR needs at least one block and one feature")
        self.scale = int(scale)
        self.head = _conv(in_channels, num_features)
        self.body = nn.Sequential(
            *[ResBlock(num_features, res_scale) for _ in range(num_blocks)],
            _conv(num_features, num_features),
        )
        self.tail = nn.Sequential(
            Upsampler(self.scale, num_features) if self.scale > 1 else nn.Identity(),
            _conv(num_features, in_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.body(h) + h)


def edsr_init_args(sr: dict, scale: int) -> dict:
    """The constructor arguments of :class:`EDSR` from the plans' ``sr`` section (plain JSON
    types, stored in checkpoints so that a network can be rebuilt without the plans)."""
    return {
        "scale": int(scale),
        "num_blocks": int(sr["num_blocks"]),
        "num_features": int(sr["num_features"]),
        "res_scale": float(sr.get("res_scale", 1.0)),
        "in_channels": 1,
    }


def build_edsr(sr: dict, scale: int) -> EDSR:
    """EDSR as the plans' ``sr`` section describes it, for the plans' integer ``scale``."""
    return EDSR(**edsr_init_args(sr, scale))


NETWORKS.register(
    NetworkSpec(
        name="EDSR",
        cls=EDSR,
        arg_bounds={
            "scale": (int, 2, 16),
            "num_blocks": (int, 1, 256),
            "num_features": (int, 1, 1024),
            "res_scale": (float, 0.0, 10.0),
            "in_channels": (int, 1, 16),
        },
        init_args=edsr_init_args,
    ),
    name="EDSR",
)
