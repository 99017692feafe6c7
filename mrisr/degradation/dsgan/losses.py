"""KernelGAN's kernel regularisers, the bicubic target and the per-unit lambda schedule."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mrisr.degradation.dsgan.params import REGULARISERS
from mrisr.degradation.kernels import (
    bicubic_kernel_1d,
    boundary_penalty_mask,
    lr_crop_size,
    wanted_center,
)


# --------------------------------------------------------------------------- losses
class Regularisers(torch.nn.Module):
    """KernelGAN's kernel regularisers and bicubic target, batched over units."""

    def __init__(self, scale: int, kernel_size: int, hr_crop: int) -> None:
        super().__init__()
        self.scale, self.kernel_size, self.hr_crop = scale, kernel_size, hr_crop
        self.n_out = lr_crop_size(hr_crop, scale, kernel_size)
        b = bicubic_kernel_1d(scale)
        length = len(b)
        # Output m of G is centred on HR position s*m + c; the bicubic window starting at
        # s*m + t0 is centred there too.
        c = wanted_center(kernel_size, scale)
        t0 = c - (length - 1) / 2
        if t0 != int(t0):
            raise ValueError(f"bicubic target cannot be aligned for scale {scale}")
        t0 = int(t0)
        self.pad_lo = max(0, -t0)
        self.start = t0 + self.pad_lo
        self.pad_hi = max(0, scale * (self.n_out - 1) + t0 + length - hr_crop)
        self.register_buffer("bicubic", torch.from_numpy(np.outer(b, b)).float()[None, None])
        self.register_buffer("mask", torch.from_numpy(boundary_penalty_mask(kernel_size)))
        self.register_buffer("indices", torch.arange(kernel_size, dtype=torch.float32))
        self.center = c

    def bicubic_target(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` HR crops -> ``(N, 1, n_out, n_out)`` bicubic-downscaled target."""
        if self.pad_lo or self.pad_hi:
            x = F.pad(x, (self.pad_lo, self.pad_hi, self.pad_lo, self.pad_hi), mode="reflect")
        x = x[:, :, self.start :, self.start :]
        y = F.conv2d(x, self.bicubic, stride=self.scale)
        return y[:, :, : self.n_out, : self.n_out]

    def kernel_terms(self, k: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-unit ``(sum2one, boundaries, center, sparse)`` of ``(N, K, K)`` kernels."""
        total = k.sum(dim=(1, 2))
        sum2one = (1.0 - total).abs()
        boundaries = (k * self.mask).abs().mean(dim=(1, 2))
        com_r = (k.sum(dim=2) * self.indices).sum(dim=1) / total
        com_c = (k.sum(dim=1) * self.indices).sum(dim=1) / total
        center = 0.5 * ((com_r - self.center) ** 2 + (com_c - self.center) ** 2)
        sparse = (k * k + 1e-20).pow(0.1).mean(dim=(1, 2))
        return sum2one, boundaries, center, sparse


# --------------------------------------------------------------------------- schedule
class LambdaSchedule:
    """KernelGAN's ``Learner`` (regulariser weights), vectorised over units."""

    def __init__(self, n: int, lambdas: dict, sched: dict) -> None:
        self.lam = np.tile(
            np.array([float(lambdas[r]) for r in REGULARISERS], dtype=np.float32), (n, 1)
        )
        self.similar = np.zeros(n, dtype=bool)
        self.counter = np.zeros(n, dtype=np.int64)
        self.inserted = np.zeros(n, dtype=bool)
        self.similar_at = np.full(n, -1, dtype=np.int64)
        self.s = sched

    def update(self, iteration: int, bicubic_loss: np.ndarray) -> None:
        """Call after training iteration ``iteration`` with that iteration's bicubic losses."""
        if iteration == 0:
            return
        s = self.s
        was_similar = self.similar.copy()
        under = bicubic_loss < s["bicubic_threshold"]
        pending = ~was_similar
        become = pending & under & (self.counter >= s["threshold_patience"])
        self.similar |= become
        self.similar_at[become] = iteration
        self.counter[pending & under & ~become] += 1
        self.counter[pending & ~under] = 0
        if iteration % int(s["decay_every"]) == 0:
            lam_b = self.lam[:, 0]
            dec = was_similar & (lam_b > s["bicubic_min"])
            lam_b[dec] = np.maximum(lam_b[dec] / s["decay_factor"], s["bicubic_min"])
            ins = dec & ~self.inserted & (lam_b < s["switch_below"])
            self.lam[ins, 3] = s["center_end"]
            self.lam[ins, 4] = s["sparse_end"]
            self.inserted |= ins
