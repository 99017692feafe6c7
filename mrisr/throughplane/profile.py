"""Slice profiles and the 1D operators of through-plane degradation, at any ratio.

A slice profile ``h(x)`` (x in in-plane pixels, centred on the slice) is stored as samples
on a fine grid (``STEP`` px) and read piecewise-linearly. Acquiring slice ``j`` of a line
``f`` (one in-plane pixel apart) gives ``sum_i f_i * H(i - p_j)`` with ``p_j = phase + j *
ratio`` and ``H`` the profile integrated over a pixel (``SUBSAMPLES`` points), normalised
to sum 1: :func:`degradation_matrix` builds that ``(m, n)`` matrix, differentiably in the
profile samples (the learned profile is trained through it). :func:`interpolation_matrix`
is the cubic B-spline interpolation back from the slices to the pixel grid: the B-spline
baseline, and the input the network refines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import make_interp_spline

#: profile sample spacing, in in-plane pixels
STEP = 0.25
#: points per pixel at which the profile is integrated over a pixel's extent
SUBSAMPLES = (-0.375, -0.125, 0.125, 0.375)
GAUSS_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


def support_half_width(thickness_px: float) -> int:
    """Samples either side of the centre: 1.5 slice thicknesses + 2 px, in STEP units."""
    return int(math.ceil((1.5 * thickness_px + 2.0) / STEP))


@dataclass
class SliceProfile:
    """Profile samples at ``(q - centre) * STEP`` px, ``q = 0 .. len - 1``; ``kind`` names
    where it came from (gaussian, rect, learned)."""

    values: np.ndarray
    kind: str

    @property
    def centre(self) -> int:
        return len(self.values) // 2

    @property
    def positions(self) -> np.ndarray:
        return (np.arange(len(self.values)) - self.centre) * STEP

    def fwhm_px(self) -> float:
        """Full width at half maximum (px), half-max crossings read linearly from the peak."""
        v = np.asarray(self.values, float)
        k = int(np.argmax(v))
        half = v[k] / 2.0
        if half <= 0:
            return 0.0

        def crossing(direction: int) -> float:
            i = k
            while 0 <= i + direction < len(v) and v[i + direction] > half:
                i += direction
            j = i + direction
            if not 0 <= j < len(v):
                return float(i)
            return i + direction * (v[i] - half) / (v[i] - v[j])

        return float((crossing(1) - crossing(-1)) * STEP)

    def to_json(self, inplane_spacing: float) -> dict:
        return {
            "kind": self.kind,
            "step_px": STEP,
            "values": [float(x) for x in self.values],
            "fwhm_px": self.fwhm_px(),
            "fwhm_mm": self.fwhm_px() * inplane_spacing,
        }

    @classmethod
    def from_json(cls, d: dict) -> SliceProfile:
        if float(d.get("step_px", STEP)) != STEP:
            raise ValueError(f"profile sampled at {d.get('step_px')} px, expected {STEP}")
        return cls(np.asarray(d["values"], np.float32), str(d["kind"]))


def gaussian_profile(fwhm_px: float, half_width: int | None = None) -> SliceProfile:
    hw = support_half_width(fwhm_px) if half_width is None else half_width
    x = np.arange(-hw, hw + 1) * STEP
    sigma = fwhm_px / GAUSS_FWHM
    return SliceProfile(np.exp(-0.5 * (x / sigma) ** 2).astype(np.float32), "gaussian")


def rect_profile(width_px: float, half_width: int | None = None) -> SliceProfile:
    """A box of the slice thickness; samples on its edges take the covered fraction."""
    hw = support_half_width(width_px) if half_width is None else half_width
    x = np.arange(-hw, hw + 1) * STEP
    lo, hi = x - STEP / 2, x + STEP / 2
    covered = np.clip(np.minimum(hi, width_px / 2) - np.maximum(lo, -width_px / 2), 0, None)
    return SliceProfile((covered / STEP).astype(np.float32), "rect")


def slice_positions(n: int, ratio: float, phase: float = 0.0) -> np.ndarray:
    """Centres (px) of the slices that fit on a line of ``n`` pixels."""
    m = int(math.floor((n - 1 - phase) / ratio + 1e-6)) + 1
    return phase + ratio * np.arange(m)


def degradation_matrix(
    values: torch.Tensor,
    n: int,
    ratio: float,
    phase: float = 0.0,
    subsamples: tuple[float, ...] = SUBSAMPLES,
) -> torch.Tensor:
    """``(m, n)``: slices at ``slice_positions(n, ratio, phase)`` through the profile whose
    samples are ``values`` (differentiable in ``values``), read at ``subsamples`` within each
    pixel and averaged; rows sum to 1."""
    q = values.shape[-1]
    c = q // 2
    p = torch.as_tensor(slice_positions(n, ratio, phase), dtype=values.dtype)
    sub = torch.as_tensor(subsamples, dtype=values.dtype)
    x = torch.arange(n, dtype=values.dtype)[None, :, None] + sub - p[:, None, None]
    idx = x / STEP + c
    lo = torch.floor(idx)
    w = idx - lo
    lo = lo.long()
    padded = torch.cat([values.new_zeros(1), values, values.new_zeros(1)])

    def read(i: torch.Tensor) -> torch.Tensor:
        return padded[(i + 1).clamp(0, q + 1)]

    h = (1 - w) * read(lo) + w * read(lo + 1)
    d = h.mean(-1)
    return d / d.sum(-1, keepdim=True).clamp_min(1e-12)


def noise_gain(d: torch.Tensor, own: float = 1.0) -> torch.Tensor:
    """Per slice: the std of white noise that, added after ``d``, brings noise of std
    ``own`` (relative to the target's) to the target's (``d`` averages it down by its
    rows' norms)."""
    return (1.0 - own**2 * (d**2).sum(-1)).clamp_min(0.0).sqrt()


def interpolation_matrix(positions: np.ndarray, n_out: int) -> torch.Tensor:
    """``(n_out, m)``: cubic B-spline interpolation from samples at ``positions`` (px) to
    pixels ``0 .. n_out - 1`` (beyond the first and last sample: their values)."""
    m = len(positions)
    if m == 1:
        return torch.ones(n_out, 1)
    spline = make_interp_spline(positions, np.eye(m), k=min(3, m - 1))
    at = np.clip(np.arange(n_out, dtype=float), positions[0], positions[-1])
    return torch.as_tensor(spline(at), dtype=torch.float32)
