"""Estimated kernels: statistics, KernelGAN post-processing, plausibility, figures.

Conventions: :mod:`mrisr.degradation.kernels`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from mrisr.degradation.kernels import wanted_center
from mrisr.utilities.file_io import atomic_path

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- statistics
def center_of_mass(kernel: np.ndarray) -> np.ndarray:
    """``[row, col]`` centre of mass (of the signed values)."""
    k = np.asarray(kernel, dtype=np.float64)
    s = k.sum()
    if s == 0:
        return np.array([np.nan, np.nan])
    rows, cols = np.arange(k.shape[0]), np.arange(k.shape[1])
    return np.array([(k.sum(1) * rows).sum() / s, (k.sum(0) * cols).sum() / s])


def fwhm_of_profile(profile: np.ndarray) -> float:
    """Full width at half maximum of a 1D profile, linear interpolation between taps."""
    p = np.asarray(profile, dtype=np.float64)
    i = int(np.argmax(p))
    half = p[i] / 2.0
    if p[i] <= 0:
        return float("nan")
    left = i
    while left > 0 and p[left - 1] > half:
        left -= 1
    right = i
    while right < len(p) - 1 and p[right + 1] > half:
        right += 1
    if left == 0 or right == len(p) - 1:
        return float("nan")  # half maximum not reached inside the kernel
    xl = left - (p[left] - half) / (p[left] - p[left - 1])
    xr = right + (p[right] - half) / (p[right] - p[right + 1])
    return float(xr - xl)


def kernel_statistics(kernel: np.ndarray) -> dict[str, float | list[float]]:
    """Summary of a kernel (axis order ``[y, x]`` = ``[row, col]``).

    ``sum``; ``center_of_mass``; ``sigma``: effective width per axis, the square root of
    the second central moment of the sum-normalised kernel (the sigma of a Gaussian);
    ``fwhm``: full width at half maximum of the marginal profile per axis (2.355 sigma for
    a Gaussian; NaN when the half maximum is not reached inside the kernel);
    ``min``, ``max``.
    """
    k = np.asarray(kernel, dtype=np.float64)
    s = float(k.sum())
    com = center_of_mass(k)
    sig = []
    for axis, c in zip((1, 0), com):
        prof = k.sum(axis=axis)
        idx = np.arange(len(prof))
        var = (prof * (idx - c) ** 2).sum() / s if s != 0 else np.nan
        sig.append(float(np.sqrt(var)) if var >= 0 else float("nan"))
    fwhm = [fwhm_of_profile(k.sum(axis=1)), fwhm_of_profile(k.sum(axis=0))]
    return {
        "sum": s,
        "center_of_mass": [float(com[0]), float(com[1])],
        "sigma": sig,
        "fwhm": fwhm,
        "min": float(k.min()),
        "max": float(k.max()),
    }


# --------------------------------------------------------------------------- post-processing
def zeroize_negligible(
    kernel: np.ndarray, n_largest: int = 41, threshold_fraction: float = 0.75, soft: bool = False
) -> np.ndarray:
    """KernelGAN's ``zeroize_negligible_val``: drop values below a fraction of the n-th largest.

    The threshold is ``threshold_fraction`` times the ``n_largest``-th largest value. With
    ``soft=False`` values below it are set to zero (and negatives clipped); with
    ``soft=True`` the threshold is also subtracted from the remaining values, as
    KernelGAN's code does (``clip(k - t, 0)``), which narrows wide kernels more. The result
    is renormalised to sum 1.
    """
    k = np.asarray(kernel, dtype=np.float64)
    flat = np.sort(k.ravel())
    n = min(max(int(n_largest), 1), flat.size)
    t = threshold_fraction * flat[-n]
    out = np.clip(k - t, 0, None) if soft else np.where(k >= t, np.clip(k, 0, None), 0.0)
    s = out.sum()
    if not np.isfinite(s) or s <= 0:
        raise ValueError("kernel has no positive values left after thresholding")
    return out / s


def kernel_shift(
    kernel: np.ndarray, scale: int, pad: int = 2, max_rounds: int = 3, clip: bool = True
) -> np.ndarray:
    """Shift a kernel so its centre of mass is at the decimation phase of ``scale``.

    KernelGAN's ``kernel_shift``: the kernel is zero-padded by ``pad`` on each side (fixed,
    so every kernel gets the same size ``K + 2*pad``) and shifted by cubic-spline
    interpolation so that its centre of mass lands on :func:`wanted_center`; spline
    overshoots are clipped and the kernel renormalised (repeated until the centre is within
    1e-3 px, at most ``max_rounds`` times). A warning is logged if more than 1% of the mass
    would leave the padded canvas. ``clip=False`` keeps negative lobes (signed kernels).
    """
    k = np.pad(np.asarray(kernel, dtype=np.float64), pad)
    if k.shape[0] % 2 == 0 or k.shape[0] != k.shape[1]:
        raise ValueError(f"kernel must be square with an odd size, got {kernel.shape}")
    target = wanted_center(k.shape[0], scale)
    for _ in range(max_rounds):
        shift = target - center_of_mass(k)
        if np.max(np.abs(shift)) < 1e-3:
            break
        if np.max(np.abs(shift)) > pad:
            logger.warning(
                "kernel centre of mass is %.2f px off its decimation phase; the shift may "
                "cut off part of the kernel (pad %d)",
                float(np.max(np.abs(shift))),
                pad,
            )
        before = k.sum()
        k = ndimage.shift(k, shift, order=3, mode="constant", cval=0.0)
        if clip:
            k = np.clip(k, 0, None)
        if k.sum() < 0.99 * before:
            logger.warning("kernel shift lost %.1f%% of the mass", 100 * (1 - k.sum() / before))
        k = k / k.sum()
    return k


def post_process_kernel(
    kernel: np.ndarray,
    scale: int,
    n_largest: int = 41,
    threshold_fraction: float = 0.75,
    pad: int = 2,
    soft: bool = False,
) -> np.ndarray:
    """KernelGAN's post-processing of an estimated kernel.

    Zero values below ``threshold_fraction`` x the ``n_largest``-th largest value, clip
    negatives, renormalise to sum 1 (:func:`zeroize_negligible`), then shift the centre
    of mass to the decimation phase of ``scale`` (:func:`kernel_shift`; output size
    ``K + 2*pad``). Returns float32, non-negative, summing to 1.
    """
    k = zeroize_negligible(kernel, n_largest, threshold_fraction, soft=soft)
    return kernel_shift(k, scale, pad=pad).astype(np.float32)


def signed_kernel(raw: np.ndarray, scale: int, pad: int = 2) -> np.ndarray:
    """The generator's own kernel for synthesis: sum 1, centred at the decimation phase,
    negative lobes kept (an MR point-spread function has them; clipping, as
    :func:`post_process_kernel` does, is for display and statistics). Size ``K + 2*pad``."""
    k = np.asarray(raw, dtype=np.float64)
    total = k.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("kernel does not sum to a positive value")
    return kernel_shift(k / total, scale, pad=pad, clip=False).astype(np.float32)


def implausible_reason(kernel: np.ndarray, scale: int, median_sigma: float | None) -> str | None:
    """Why an estimated (post-processed) kernel is not a plausible PSF, or None.

    Multi-modal (a second lobe holding over 10% of the mass, separated from the main one),
    off-centre (centre of mass over 1 HR px from the decimation phase before the shift is
    not checked here: the shift repairs that; after it, mass piled on the border), or a
    width outlier (effective sigma outside [0.6, 1.6] x the dataset's median).
    """
    k = np.asarray(kernel, dtype=np.float64)
    pos = np.clip(k, 0, None)
    if pos.sum() <= 0:
        return "no positive mass"
    labels, n = ndimage.label(pos > 0.05 * pos.max())
    if n > 1:
        mass = ndimage.sum(pos, labels, index=np.arange(1, n + 1))
        mass = np.sort(mass / pos.sum())[::-1]
        if mass[1] > 0.10:
            return f"multi-modal: a second lobe holds {100 * mass[1]:.0f}% of the mass"
    border = np.ones_like(pos, dtype=bool)
    border[2:-2, 2:-2] = False
    if pos[border].sum() > 0.10 * pos.sum():
        return f"{100 * pos[border].sum() / pos.sum():.0f}% of the mass on the kernel's border"
    if median_sigma:
        sig = float(np.mean(kernel_statistics(pos / pos.sum())["sigma"]))
        if not 0.6 * median_sigma <= sig <= 1.6 * median_sigma:
            return f"width outlier: sigma {sig:.2f} px vs the dataset's median {median_sigma:.2f}"
    return None


# --------------------------------------------------------------------------- plots
def save_kernel_grid_png(
    kernels: Sequence[np.ndarray] | np.ndarray,
    names: Sequence[str],
    path: str | Path,
    max_kernels: int = 64,
    title: str | None = None,
) -> None:
    """Write a PNG grid of kernels (each with its own colour scale), atomically.

    At most ``max_kernels`` are drawn (evenly subsampled, e.g. one per slice of a long
    series).
    """
    # Figure + Agg canvas directly: no pyplot state, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kernels = list(kernels)
    names = list(names)
    if len(kernels) != len(names):
        raise ValueError(f"{len(kernels)} kernels but {len(names)} names")
    if not kernels:
        raise ValueError("no kernels to plot")
    if len(kernels) > max_kernels:
        idx = np.unique(np.linspace(0, len(kernels) - 1, max_kernels).round().astype(int))
        kernels, names = [kernels[i] for i in idx], [names[i] for i in idx]
    n = len(kernels)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig = Figure(figsize=(1.6 * cols, 1.7 * rows + (0.4 if title else 0)), dpi=100)
    FigureCanvasAgg(fig)
    for i, (k, name) in enumerate(zip(kernels, names)):
        ax = fig.add_subplot(rows, cols, i + 1)
        k = np.asarray(k, dtype=np.float32)
        ax.imshow(k, cmap="viridis", interpolation="nearest")
        st = kernel_statistics(k)
        ax.set_title(f"{name}\n$\\sigma$ {st['sigma'][0]:.2f}/{st['sigma'][1]:.2f}", fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
