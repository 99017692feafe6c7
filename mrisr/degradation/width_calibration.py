"""Calibration of learned kernels on the registered pairs: per-axis widths, and whether
the cases keep their own kernels or share the pooled one.

An unpaired GAN learns the *shape* of a scanner's point-spread function well and its
width less well: on the demo protocols the median kernel of the DSGAN units comes out
10-18 % too narrow or too wide on one axis (``documentation/degradation.md``), and one
GAN's width varies with the image content it saw. Where the dataset has registered pairs,
the real LR of the same anatomy says how wide the blur is: the kernels are stretched
about their centre of mass by one factor per in-plane axis, chosen to maximise the SSIM
between the synthetic LR and the registered real LR of the training pairs -- the criterion
by which the fitted Gaussian baseline chooses its single width, here with the learned
shape kept. Factors are bounded (0.70-1.43) and kept at 1 unless they raise the match.
By the same criterion :func:`choose_pooling` decides between each case's own kernel and
the pooled one (the noise of one GAN's estimate against real differences between cases).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage, optimize

from mrisr.degradation.kernel_analysis import center_of_mass
from mrisr.degradation.kernels import degrade_with_kernel
from mrisr.metrics.fidelity import ssim

#: bound of the natural log of a factor (0.70-1.43)
LOG_BOUND = 0.36
#: pairs scored per evaluation (the first ones, sorted): enough to fit two numbers
MAX_PAIRS = 8
#: tolerance on the log factor (1 %)
LOG_TOLERANCE = 0.01


def stretch_kernel(kernel: np.ndarray, factors: tuple[float, float]) -> np.ndarray:
    """Stretch ``(K, K)`` (or ``(Z, K, K)``) kernels by ``(f_y, f_x)`` about each kernel's
    centre of mass (cubic spline: linear interpolation would add 1/6 px^2 of variance),
    keeping each kernel's sum; a non-negative kernel stays non-negative.

    Factors above 1 widen; the array grows to hold the wider support (odd size, centre
    kept at the same offset from the border, as ``degrade_with_kernel`` requires).
    """
    k = np.asarray(kernel, dtype=np.float64)
    squeeze = k.ndim == 2
    if squeeze:
        k = k[None]
    if k.ndim != 3 or k.shape[-1] != k.shape[-2]:
        raise ValueError(f"expected (K, K) or (Z, K, K) kernels, got {tuple(k.shape)}")
    f = np.asarray(factors, dtype=np.float64)
    if f.shape != (2,) or not np.all(f > 0):
        raise ValueError(f"factors must be two positive numbers, got {factors}")
    size = k.shape[-1]
    grow = int(math.ceil(size * (max(f.max(), 1.0) - 1.0) / 2.0))
    n = size + 2 * grow
    yy, xx = np.mgrid[:n, :n].astype(np.float64) - grow
    out = np.empty((len(k), n, n))
    for i, ki in enumerate(k):
        cy, cx = center_of_mass(ki)
        src = [(yy - cy) / f[0] + cy, (xx - cx) / f[1] + cx]
        out[i] = ndimage.map_coordinates(ki, src, order=3, mode="constant", cval=0.0)
        if ki.min() >= 0:  # no negative lobes from the spline's ringing
            np.clip(out[i], 0.0, None, out=out[i])
        total = out[i].sum()
        if total != 0:
            out[i] *= ki.sum() / total
    out = out.astype(np.float32)
    return out[0] if squeeze else out


def _bounded_search(score: Callable[[float], float]) -> tuple[float, int]:
    """The log factor in [-LOG_BOUND, LOG_BOUND] maximising ``score``; evaluations used."""
    res = optimize.minimize_scalar(
        lambda t: -score(t),
        bounds=(-LOG_BOUND, LOG_BOUND),
        method="bounded",
        options={"xatol": LOG_TOLERANCE},
    )
    return float(res.x), int(res.nfev)


def _fidelity(hr: dict, kernels: dict, real: dict, scale: int, cases: list[str]) -> float:
    """Mean SSIM between each case's synthetic LR and its registered real LR."""
    vals = []
    for c in cases:
        lr, mask = real[c]
        vals.append(ssim(lr, degrade_with_kernel(hr[c], kernels[c], scale), mask))
    return float(np.mean(vals))


def _paired_cases(hr: dict, kernels: dict, real: dict) -> list[str]:
    cases = sorted(c for c in hr if c in kernels and c in real)[:MAX_PAIRS]
    if not cases:
        raise ValueError("calibration needs at least one registered pair")
    return cases


def choose_pooling(
    hr: dict[str, np.ndarray],
    kernels: dict[str, np.ndarray],
    pooled: np.ndarray,
    real: dict[str, tuple[np.ndarray, np.ndarray]],
    scale: int,
) -> dict:
    """Each case its own kernel(s) (``kernels``), or one ``pooled`` kernel for all: the
    one whose synthetic LR matches the registered real LR better (SSIM). One GAN's
    estimate carries the noise of its seed and content; where the cases share an
    acquisition the pooled kernel averages it out, where they do not the cases' own
    kernels win. Returns ``pooled`` (bool) and both SSIMs."""
    cases = _paired_cases(hr, kernels, real)
    own = _fidelity(hr, kernels, real, scale, cases)
    one = _fidelity(hr, {c: pooled for c in cases}, real, scale, cases)
    return {"pooled": bool(one > own), "ssim_units": own, "ssim_pooled": one, "pairs": len(cases)}


def calibrate_widths(
    hr: dict[str, np.ndarray],
    kernels: dict[str, np.ndarray],
    real: dict[str, tuple[np.ndarray, np.ndarray]],
    scale: int,
) -> dict:
    """Per-axis factors that make ``kernels`` reproduce the registered real LR best.

    ``hr``: case -> HR volume ``(Z, H, W)``; ``kernels``: case -> its kernel(s) as
    :func:`~mrisr.degradation.kernels.degrade_with_kernel` takes them; ``real``: case ->
    (real LR on the synthetic LR's grid, its foreground mask). Returns ``factors_yx``,
    the SSIM before and after, the number of pairs and of evaluations. A coordinate
    search (y, then x), each a bounded Brent search on the log factor.
    """
    cases = _paired_cases(hr, kernels, real)

    def score(fy: float, fx: float) -> float:
        stretched = {c: stretch_kernel(kernels[c], (fy, fx)) for c in cases}
        return _fidelity(hr, stretched, real, scale, cases)

    before = score(1.0, 1.0)
    ty, ny = _bounded_search(lambda t: score(math.exp(t), 1.0))
    tx, nx = _bounded_search(lambda t: score(math.exp(ty), math.exp(t)))
    factors = [math.exp(ty), math.exp(tx)]
    after = score(*factors)
    if not after > before:
        factors, after = [1.0, 1.0], before
    return {
        "factors_yx": [round(f, 4) for f in factors],
        "ssim_before": before,
        "ssim_after": after,
        "pairs": len(cases),
        "evaluations": ny + nx + 2,
    }
