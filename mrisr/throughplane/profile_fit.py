"""The slice profile measured from the scan itself: its width fitted to the through-plane spectrum.

The linear generator of the 1D degradation (the profile at the exact ratio, any phase, the
noise it averages away put back) is applied to the scans' own in-plane lines; its width is
chosen so that the power spectrum of what it makes matches the power spectrum of the real
through-plane lines, segment by segment in tissue (unpaired, as the DSGAN fits its kernel,
but with the spectra as the critic). Only the spectrum's *shape* is compared (log power,
its mean removed): the anatomy's own anisotropy changes the level, not the roll-off.

Measured on the thick-slice demo (box profiles of 3, 4 and 5 px), the fitted widths are
within 10 % of the truth, where the adversarial fit (:mod:`.profile_gan`) narrowed past it
(``documentation/throughplane.md``). The family is the box a slice-selective excitation is
designed to be; a Gaussian fits the same spectra about as well at ~0.7x the width, so the
shape within the family is not decided by this measurement, only the width.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mrisr.throughplane.geometry import ThickSliceGeometry
from mrisr.throughplane.pairs import CROP_TISSUE
from mrisr.throughplane.profile import (
    STEP,
    SliceProfile,
    degradation_matrix,
    rect_profile,
    support_half_width,
)

#: through-plane samples per spectral segment (fewer when the scan has fewer slices)
SEGMENT = 12
#: segments drawn per view (real) and per in-plane orientation (simulated)
SEGMENTS = 4000
#: fewest tissue segments of each kind the fit needs
MIN_SEGMENTS = 200
#: sub-slice phases averaged in the simulated spectrum
PHASES = 4
COARSE = 0.25  # px, first pass of widths
FINE = 0.05  # px, second pass around the best coarse width
#: the profile read at pixel centres: averaging it over each pixel (the training pairs' box
#: edges) adds a pixel-wide blur along the measured axis that the slabs do not have, and the
#: fit would narrow by ~8 % to make up for it (measured on an isotropic texture)
POINT = (0.0,)


class ProfileFitError(ValueError):
    """The scans hold too little tissue along the thick axis to measure the profile."""


def _segments(
    stack: np.ndarray,
    length: int,
    n: int,
    rng: np.random.Generator,
    width: int = 1,
    margin: int = 0,
) -> np.ndarray:
    """Up to ``n`` patches (n, length, width) along axis 1 of a (k, L, C) stack, their
    centre column tissue throughout (but for ``margin`` samples at either end)."""
    k, lines, cols = stack.shape
    if lines < length or cols < width:
        return np.zeros((0, length, width), np.float32)
    cand = 8 * n
    s = rng.integers(0, k, cand)
    y = rng.integers(0, lines - length + 1, cand)
    c = rng.integers(0, cols - width + 1, cand)
    seg = stack[
        s[:, None, None],
        y[:, None, None] + np.arange(length)[:, None],
        c[:, None, None] + np.arange(width),
    ]
    core = seg[:, margin : length - margin, width // 2]
    return seg[core.min(1) > CROP_TISSUE][:n]


def _log_power(seg: np.ndarray | torch.Tensor) -> np.ndarray:
    """Log of the mean Hann-windowed periodogram of segments (DC left out)."""
    x = torch.as_tensor(seg, dtype=torch.float64)
    x = (x - x.mean(1, keepdim=True)) * torch.hann_window(x.shape[1] + 2, periodic=False)[1:-1]
    p = (torch.fft.rfft(x, dim=1).abs() ** 2).mean(0)[1:]
    return torch.log(p.clamp_min(1e-20)).numpy()


def fit_profile(
    volumes: list[np.ndarray],
    g: ThickSliceGeometry,
    sigmas: list[float],
    seed: int = 0,
) -> tuple[SliceProfile, dict]:
    """The box profile whose through-plane spectrum matches scans (thick axis first,
    normalised) sharing geometry ``g``; and the fit's record (widths tried, their misfit)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    widest = 2.0 * max(g.ratio, g.thickness_px)
    hw = support_half_width(widest)
    reach = 2 * int(np.ceil(hw * STEP)) + 2  # in-plane pixels the profile needs around a line
    n = min(v.shape[0] for v in volumes)
    inplane = min(min(v.shape[1:]) for v in volumes)
    length = min(SEGMENT, n - 2, int((inplane - reach) / g.ratio) - 1)
    if length < 6:
        raise ProfileFitError(f"{n} slices of {inplane} px: too few to measure the slice profile")
    hr_len = int(np.ceil((length + 1) * g.ratio)) + reach
    cols = 2 * int(np.ceil(hw * STEP)) + 1  # in-plane neighbours the profile reaches
    real, hr = [], []
    for v in volumes:
        for view in (v.transpose(1, 0, 2), v.transpose(2, 0, 1)):
            real.append(_segments(view, length, SEGMENTS, rng, cols))
        for sl in (v, v.transpose(0, 2, 1)):
            hr.append(_segments(sl, hr_len, SEGMENTS, rng, margin=reach // 2)[..., 0])
    real_seg, hr_seg = np.concatenate(real), np.concatenate(hr)
    if min(len(real_seg), len(hr_seg)) < MIN_SEGMENTS:
        raise ProfileFitError(
            f"{len(real_seg)} through-plane and {len(hr_seg)} in-plane tissue segments: too "
            f"few to measure the slice profile (needs {MIN_SEGMENTS} of each)"
        )
    x = torch.as_tensor(hr_seg, dtype=torch.float32)
    views = torch.as_tensor(real_seg, dtype=torch.float32)
    phases = np.arange(PHASES) * g.ratio / PHASES

    def misfit(width: float) -> float:
        values = torch.as_tensor(rect_profile(width, hw).values)
        # the real views blurred in-plane by the same profile: both sides then carry it
        # along both axes (the slab blurred the in-plane slices along the thick axis)
        k = degradation_matrix(values, cols, float(cols), float(cols // 2), POINT)[0]
        target = _log_power(views @ k)
        spectra = []
        for ph in phases:
            d = degradation_matrix(values, hr_len, g.ratio, float(ph), POINT)
            y = x @ d.T
            off = (y.shape[1] - length) // 2
            spectra.append(np.exp(_log_power(y[:, off : off + length])))
        diff = np.log(np.mean(spectra, 0)) - target
        return float(np.mean((diff - diff.mean()) ** 2))

    coarse = [(float(w), misfit(float(w))) for w in np.arange(0.5, widest + 1e-6, COARSE)]
    best = min(coarse, key=lambda wl: wl[1])[0]
    fine_w = np.arange(max(0.5, best - COARSE), best + COARSE + 1e-6, FINE)
    fine = [(float(w), misfit(float(w))) for w in fine_w]
    width, loss = min(fine, key=lambda wl: wl[1])
    profile = rect_profile(width, support_half_width(max(width, g.thickness_px, g.ratio)))
    profile.kind = "learned"
    return profile, {
        "method": "through-plane spectrum",
        "family": "rect",
        "width_px": round(width, 3),
        "misfit": loss,
        "misfit_by_width_px": [[round(w, 3), round(m, 6)] for w, m in coarse],
        "segments": {"through_plane": len(real_seg), "in_plane": len(hr_seg)},
        "segment_slices": length,
        "seconds": round(time.perf_counter() - t0, 2),
    }
