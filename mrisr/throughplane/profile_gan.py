"""The slice profile learned unpaired: the DSGAN's linear generator in one dimension.

The generator is one 1D kernel, the profile (samples every ``STEP`` px, non-negative
through a softmax), applied along the rows of the scan's own in-plane slices at the exact
spacing ratio (:func:`~mrisr.throughplane.profile.degradation_matrix`, random phase), with
the noise it averaged away put back (the measured sigma). The discriminator sees those
against the scan's real through-plane views (thick axis as rows), patch by patch; the
only thing the generator can change is the profile, so matching the views' statistics
along the thick axis fits the profile (as the paper's DSGAN fits the in-plane kernel).
A centring penalty keeps the profile on the slice centre (a shift is not a profile).
The start is a Gaussian of the stated (or assumed) thickness; the fit moves from there.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from mrisr.throughplane.geometry import ThickSliceGeometry
from mrisr.throughplane.pairs import degrade_lines, tissue_crops
from mrisr.throughplane.profile import STEP, SliceProfile, gaussian_profile, support_half_width

ITERATIONS = 1500
BATCH = 32
ROWS = 10  # thick-axis samples per patch
COLS = 40  # in-plane pixels per patch
LR_G = 0.002
WARMUP = 100  # discriminator-only iterations first: a random critic's gradient is noise
LR_D = 2e-4
CENTRE_WEIGHT = 1.0


class Discriminator(nn.Module):
    """A small fully convolutional patch critic (no pooling along the few thick rows)."""

    def __init__(self, features: int = 32):
        super().__init__()
        f = features
        self.net = nn.Sequential(
            nn.Conv2d(1, f, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(f, f, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(f, 2 * f, 3, padding=1, stride=(1, 2)), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * f, 2 * f, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * f, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _views(volumes: list[np.ndarray]) -> list[torch.Tensor]:
    """Both through-plane views of each (n, H, W) scan as (N, n, C) stacks (thick rows)."""
    out = []
    for v in volumes:
        t = torch.as_tensor(v)
        out += [t.permute(2, 0, 1).contiguous(), t.permute(1, 0, 2).contiguous()]
    return out


def _slices(volumes: list[np.ndarray]) -> list[torch.Tensor]:
    out = []
    for v in volumes:
        t = torch.as_tensor(v)
        out += [t, t.transpose(1, 2).contiguous()]
    return out


def _crops(stacks: list[torch.Tensor], rows: int, cols: int, n: int, rng) -> torch.Tensor:
    """``n`` crops (n, 1, rows, cols) from one random stack, preferring tissue."""
    s = stacks[int(rng.integers(len(stacks)))]
    return s[tissue_crops(s, rows, cols, n, rng)][:, None]


def learn_profile(
    volumes: list[np.ndarray],
    g: ThickSliceGeometry,
    sigmas: list[float],
    seed: int = 0,
    progress: bool = False,
    iterations: int | None = None,
    start_fwhm_px: float | None = None,
) -> tuple[SliceProfile, dict]:
    """Fit the slice profile of scans (thick axis first, normalised) sharing geometry ``g``."""
    iterations = ITERATIONS if iterations is None else int(iterations)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = g.thickness_px if start_fwhm_px is None else start_fwhm_px
    hw = support_half_width(max(g.thickness_px, start, g.ratio))
    init = gaussian_profile(start, hw).values
    logits = torch.tensor(np.log(np.maximum(init, 1e-4)), dtype=torch.float32, requires_grad=True)
    pos = torch.as_tensor((np.arange(2 * hw + 1) - hw) * STEP, dtype=torch.float32)
    d_net = Discriminator()
    opt_g = torch.optim.Adam([logits], lr=LR_G, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_net.parameters(), lr=LR_D, betas=(0.5, 0.999))
    real_stacks, hr_stacks = _views(volumes), _slices(volumes)
    sigma = float(np.mean(sigmas))
    hr_rows = int(math.ceil((ROWS + 2) * g.ratio + 2 * hw * STEP)) + 2
    gen = torch.Generator().manual_seed(seed)
    mse = nn.MSELoss()
    t0 = time.perf_counter()
    history = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=iterations, desc="slice profile (1D DSGAN)", unit="it")
    for it in range(iterations):
        prof = torch.softmax(logits, 0)
        hr = _crops(hr_stacks, hr_rows, COLS, BATCH, rng)[:, 0]
        phase = float(rng.uniform(0, g.ratio))
        fake, _ = degrade_lines(hr, prof, g.ratio, phase, sigma, gen)
        off = (fake.shape[1] - ROWS) // 2
        fake = fake[:, off : off + ROWS, None].transpose(1, 2)
        real = _crops(real_stacks, ROWS, COLS, BATCH, rng)
        # discriminator (least squares)
        pr, pf = d_net(real), d_net(fake.detach())
        loss_d = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator: the profile
        if it < WARMUP:
            if bar:
                bar.update(1)
            continue
        pf = d_net(fake)
        centre = (prof * pos).sum()
        loss_g = mse(pf, torch.ones_like(pf)) + CENTRE_WEIGHT * centre**2
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if (it + 1) % 100 == 0 or it == 0:
            fw = SliceProfile(prof.detach().numpy(), "learned").fwhm_px()
            history.append([it + 1, round(fw, 3)])
            if bar:
                bar.set_postfix(fwhm_px=f"{fw:.2f}", refresh=False)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    values = torch.softmax(logits.detach(), 0).numpy()
    result = SliceProfile((values / values.max()).astype(np.float32), "learned")
    return result, {
        "iterations": iterations,
        "seconds": time.perf_counter() - t0,
        "start_fwhm_px": start,
        "fwhm_px_history": history,
    }
