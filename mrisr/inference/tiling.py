"""Tiled inference for large slices, and the ensemble statistics of the predictor.

Tiling: a slice larger than ``tile`` LR pixels per side is cut into a grid of core tiles
(at most ``tile`` pixels per side), each extended by a margin of at least the network's
receptive-field radius on every side that is inside the slice. The network runs on the
extended tile and only the core of its output is kept. An output pixel of a fully
convolutional network depends only on inputs within its receptive field, so every kept
pixel sees exactly the inputs it sees in the whole slice: tiled equals untiled up to
floating-point summation order, and there are no seams to blend. Peak memory is bounded by
the tile size (plus margins) instead of the slice size.

Ensemble statistics: Welford's running mean and variance over the ensemble members (TTA
transforms x folds), so that the uncertainty map costs no extra network pass and members
that agree exactly give a standard deviation of exactly zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_TILE = 256  # LR pixels per side: slices up to 256 x 256 are never tiled
MIN_MARGIN = 8  # LR pixels, also for networks without convolutions (interpolation stand-ins)
SAFETY = 2  # LR pixels added to the computed receptive-field radius


def receptive_radius(net: nn.Module) -> float:
    """Receptive-field radius of a sequential conv network, in input (LR) pixels.

    Sums ``dilation * (kernel - 1) / 2`` over the Conv2d layers in registration order,
    divided by the resolution reached so far (pixel shuffles before the conv). Exact for
    EDSR (head, residual blocks, body conv, upsampler, tail).
    """
    radius, resolution = 0.0, 1.0
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            k = max(m.kernel_size)
            d = max(m.dilation) if isinstance(m.dilation, tuple) else m.dilation
            radius += d * (k - 1) / 2 / resolution
        elif isinstance(m, nn.PixelShuffle):
            resolution *= m.upscale_factor
        elif isinstance(m, nn.Upsample) and m.scale_factor:
            sf = m.scale_factor
            resolution *= float(sf if not isinstance(sf, tuple) else max(sf))
    return radius


def margin_for(networks: list[nn.Module]) -> int:
    return max(MIN_MARGIN, *(math.ceil(receptive_radius(n)) + SAFETY for n in networks))


@dataclass(frozen=True)
class Tile:
    """One tile along one axis: input range [lo, hi), core [a, b) inside it."""

    lo: int
    hi: int
    a: int
    b: int


def axis_tiles(n: int, tile: int, margin: int) -> list[Tile]:
    """Even core tiles of at most ``tile`` pixels covering ``0..n``, with margins."""
    if tile <= 0 or n <= tile:
        return [Tile(0, n, 0, n)]
    count = math.ceil(n / tile)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [Tile(max(0, a - margin), min(n, b + margin), a, b) for a, b in zip(bounds, bounds[1:])]


def tile_grid(h: int, w: int, tile: int, margin: int) -> list[tuple[Tile, Tile]]:
    """(rows tile, columns tile) pairs covering an ``h x w`` slice."""
    return [(ty, tx) for ty in axis_tiles(h, tile, margin) for tx in axis_tiles(w, tile, margin)]


class RunningStats:
    """Welford's mean and (population) variance over members added one at a time."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        self.n += 1
        if self.mean is None:
            self.mean = x.clone()
            self.m2 = torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def std(self) -> torch.Tensor:
        if self.m2 is None:
            raise ValueError("RunningStats.std() before any member was added")
        return torch.sqrt(torch.clamp(self.m2 / self.n, min=0.0))
