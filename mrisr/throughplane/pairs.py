"""Training pairs for through-plane SR from the scans' own in-plane slices.

An in-plane slice is sharp along both of its axes. Degraded along one of them the way the
scanner degrades the through-plane axis (the slice profile at the exact spacing ratio, at
a random phase, with the noise the profile averaged away put back) and interpolated back
with cubic B-splines, it becomes what a through-plane view looks like after B-spline
interpolation: the network learns to undo that. Both in-plane axes are degraded (the
slice and its transpose), always along the rows, which is how prediction presents the
through-plane views. Pairs are built once for ``PHASES`` phases per scan as whole slices;
batches are random crops of them, chosen where there is tissue.
"""

from __future__ import annotations

import numpy as np
import torch

from mrisr.throughplane.profile import (
    degradation_matrix,
    interpolation_matrix,
    noise_gain,
    slice_positions,
)

#: sub-slice phases (fractions of the spacing) at which the slices are taken
PHASES = (0.0, 1 / 3, 2 / 3)
#: a slice takes part when this share of it is tissue
MIN_TISSUE = 0.05
#: a crop counts as tissue where its mean is above this (intensities: tissue ~ 0.3-1)
CROP_TISSUE = 0.1


def degrade_lines(
    x: torch.Tensor,
    values: torch.Tensor,
    ratio: float,
    phase: float,
    sigma: float,
    gen,
    sigma_hr: float | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Rows of ``x`` (..., L, C) through the profile at ``ratio``: the slices (..., m, C) with
    noise brought to ``sigma`` (``x``'s own noise, ``sigma_hr``, default ``sigma``, is
    averaged down by the profile; white noise makes up the difference), and their
    positions (px)."""
    d = degradation_matrix(values, x.shape[-2], ratio, phase)
    y = d @ x
    if sigma > 0:
        s_hr = sigma if sigma_hr is None else sigma_hr
        g = noise_gain(d, s_hr / sigma).to(y.dtype)[:, None]
        y = y + sigma * g * torch.randn(y.shape, generator=gen, dtype=y.dtype)
    return y, slice_positions(x.shape[-2], ratio, phase)


class TrainingPairs:
    """(B-spline of the degraded slice, slice) pairs of the in-plane slices of volumes, and
    of every slice of isotropic reference volumes (``references``: (volume, its noise sigma),
    on the scans' in-plane grid; each of their axes can play the thick one)."""

    def __init__(
        self,
        volumes: list[np.ndarray],
        ratio: float,
        profile: np.ndarray,
        sigmas: list[float],
        seed: int = 0,
        references: list[tuple[np.ndarray, float]] = (),
    ):
        self._gen = torch.Generator().manual_seed(seed)
        self._values = torch.as_tensor(profile, dtype=torch.float32)
        self.ratio = ratio
        self.inputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        for vol, sigma in zip(volumes, sigmas):
            self._add(vol, sigma, sigma)
        target_sigma = float(np.mean(sigmas))
        for ref, ref_sigma in references:
            for axis in range(3):
                self._add(np.moveaxis(ref, axis, 0), target_sigma, ref_sigma)
        if not self.inputs:
            raise ValueError("no slice holds enough tissue to train on")

    def _add(self, vol: np.ndarray, sigma: float, sigma_hr: float) -> None:
        keep = (vol > CROP_TISSUE).mean(axis=(1, 2)) >= MIN_TISSUE
        if not keep.any():
            return
        x = torch.as_tensor(np.ascontiguousarray(vol[keep]), dtype=torch.float32)
        for xt in (x, x.transpose(1, 2).contiguous()):
            for ph in PHASES:
                with torch.no_grad():
                    y, pos = degrade_lines(
                        xt, self._values, self.ratio, ph * self.ratio, sigma, self._gen, sigma_hr
                    )
                    u = interpolation_matrix(pos, xt.shape[-2])
                    self.inputs.append((u @ y).contiguous())
                self.targets.append(xt)

    @property
    def slices(self) -> int:
        return sum(len(t) for t in self.targets) // (2 * len(PHASES))

    def batch(self, size: int, patch: int, rng: np.random.Generator):
        """``size`` random ``patch`` x ``patch`` crops of one (scan, axis, phase) entry, where
        the target holds tissue; (input, target) as (B, 1, patch, patch)."""
        k = int(rng.integers(len(self.inputs)))
        idx = tissue_crops(self.targets[k], patch, patch, size, rng)
        return self.inputs[k][idx][:, None], self.targets[k][idx][:, None]


def tissue_crops(stack: torch.Tensor, rows: int, cols: int, n: int, rng: np.random.Generator):
    """Index of ``n`` random ``rows`` x ``cols`` crops of a (k, h, w) stack (``stack[index]``
    is (n, rows, cols)): of 4n candidates, those holding tissue first, in random order."""
    k, h, w = stack.shape
    rows, cols = min(rows, h), min(cols, w)
    cand = 4 * n
    s = torch.as_tensor(rng.integers(0, k, cand))
    y0 = torch.as_tensor(rng.integers(0, h - rows + 1, cand))
    x0 = torch.as_tensor(rng.integers(0, w - cols + 1, cand))
    r = (y0[:, None] + torch.arange(rows))[:, :, None]
    c = (x0[:, None] + torch.arange(cols))[:, None, :]
    tissue = (stack[s[:, None, None], r, c].mean((1, 2)) > CROP_TISSUE).float()
    keep = torch.argsort(tissue + 0.5 * torch.rand(cand), descending=True)[:n]
    return s[keep, None, None], r[keep], c[keep]
