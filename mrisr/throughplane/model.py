"""The through-plane network: how it trains on in-plane pairs and how it predicts a volume.

The network refines a B-spline interpolation along the rows: EDSR at scale 1 (its
residual blocks; no upsampler) plus a global skip from the input. Prediction presents the
scan's two through-plane views (thick axis x one in-plane axis) with the thick axis as
rows, interpolated to the in-plane spacing by the same B-splines the training used, runs
the network over each, and averages the two (the views' errors are largely independent).
Only the tissue's bounding box goes through the network; outside it the B-spline stays.

Training: L1 loss, Adam, cosine learning rate to zero over the iteration count, which a
time budget sets from the speed measured on the first ``PROBE`` iterations and re-plans
at ``REPLAN_AT`` and then every tenth of the plan, from the speed since the last re-plan
(so the ETA and the schedule hold on whatever CPU or GPU runs it, and a slow start does not
end the training early).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from mrisr.networks.edsr import EDSR
from mrisr.throughplane.pairs import CROP_TISSUE, TrainingPairs
from mrisr.throughplane.profile import interpolation_matrix

NETWORK = {"num_blocks": 8, "num_features": 32}
PATCH = 48
BATCH = 16
LR = 5e-4
PROBE = 10
#: iterations after which a time budget re-plans the count from the speed so far
REPLAN_AT = (PROBE, 5 * PROBE, 25 * PROBE, 100 * PROBE)
#: slices per network call at prediction
PREDICT_BATCH = 8


class ThroughPlaneNet(nn.Module):
    """``x + EDSR_1(x)`` on (B, 1, h, w) B-spline-interpolated views."""

    def __init__(self, num_blocks: int = 8, num_features: int = 32):
        super().__init__()
        self.args = {"num_blocks": int(num_blocks), "num_features": int(num_features)}
        self.body = EDSR(1, num_blocks=num_blocks, num_features=num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def train_network(
    pairs: TrainingPairs,
    iterations: int,
    seconds: float | None = None,
    seed: int = 0,
    network: dict | None = None,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> tuple[ThroughPlaneNet, dict]:
    """Train a fresh network on ``pairs``: ``iterations`` at most, fewer when ``seconds``
    (wall clock, training only) would be exceeded at the probed speed."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ThroughPlaneNet(**(network or NETWORK)).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    total = max(1, int(iterations))
    t0 = time.perf_counter()
    losses: list[float] = []
    it, mark = 0, (0, t0)  # the speed is measured since the last re-plan
    while it < total:
        if seconds is not None and (
            it in REPLAN_AT or (it > PROBE and it - mark[0] >= total // 10)
        ):
            now = time.perf_counter()
            speed = (it - mark[0]) / max(now - mark[1], 1e-9)  # recent: early iterations run slower
            total = max(it + 1, min(int(iterations), int(it + (seconds - (now - t0)) * speed)))
            mark = (it, now)
        for g in opt.param_groups:  # cosine to zero over the (possibly re-planned) total
            g["lr"] = LR * 0.5 * (1 + math.cos(math.pi * it / total))
        x, y = pairs.batch(BATCH, PATCH, rng)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.l1_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        it += 1
        if progress:
            progress(it, total, losses[-1], time.perf_counter() - t0)
    net.eval()
    tail = losses[-max(1, total // 10) :]
    return net, {
        "iterations": total,
        "seconds": time.perf_counter() - t0,
        "final_loss": float(np.mean(tail)),
        "patch": PATCH,
        "batch": BATCH,
    }


def bspline_volume(vol: np.ndarray, ratio: float, n_out: int) -> np.ndarray:
    """Cubic B-spline along axis 0 from slices ``ratio`` px apart to ``n_out`` pixels."""
    u = interpolation_matrix(ratio * np.arange(vol.shape[0]), n_out).numpy()
    return np.tensordot(u, vol, axes=(1, 0)).astype(np.float32)


def _tissue_box(vol: np.ndarray) -> tuple[slice, slice]:
    m = (vol > CROP_TISSUE).any(axis=0)
    if not m.any():
        return slice(0, 0), slice(0, 0)
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    pad = 4
    return (
        slice(max(0, ys[0] - pad), min(m.shape[0], ys[-1] + pad + 1)),
        slice(max(0, xs[0] - pad), min(m.shape[1], xs[-1] + pad + 1)),
    )


@torch.no_grad()
def _refine(net: nn.Module, views: torch.Tensor) -> torch.Tensor:
    """The network over (N, h, w) views, ``PREDICT_BATCH`` at a time."""
    out = torch.empty_like(views)
    for i in range(0, len(views), PREDICT_BATCH):
        x = views[i : i + PREDICT_BATCH, None].contiguous(memory_format=torch.channels_last)
        out[i : i + PREDICT_BATCH] = net(x)[:, 0]
    return out


def predict_volume(net: nn.Module, vol: np.ndarray, ratio: float, n_out: int) -> np.ndarray:
    """(n, H, W) thick-axis-first scan -> (n_out, H, W): the mean of the two views' outputs."""
    base = bspline_volume(vol, ratio, n_out)
    out = base.copy()
    ys, xs = _tissue_box(vol)
    box = torch.as_tensor(base[:, ys, xs])
    if box.numel() == 0:
        return out
    net.eval()
    a = _refine(net, box.permute(2, 0, 1)).permute(1, 2, 0)  # views (x): rows z, cols y
    b = _refine(net, box.permute(1, 0, 2)).permute(1, 0, 2)  # views (y): rows z, cols x
    out[:, ys, xs] = (0.5 * (a + b)).numpy()
    return out
