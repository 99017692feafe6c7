"""Noise of MR magnitude images: level and colour, measured on the scan's background.

A magnitude image is ``|s + n|`` with ``n`` complex Gaussian noise (standard deviation
``sigma`` per channel). Where there is no signal (air, or the zero object outside a
skull-stripped brain) the magnitude is Rayleigh distributed, ``median(M^2) = 2 ln 2
sigma^2``: a robust estimate of ``sigma`` that, unlike a wavelet estimate, is not fooled by
the raw-data filter of the scanner colouring the noise. Its spatial correlation
``rho(d)`` (the colour: raw-data filter, interpolation) follows from the squared
magnitudes, whose correlation is ``rho(d)^2`` for circular complex Gaussian noise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: fewest background pixels for a background estimate
MIN_BACKGROUND = 500
#: the correlation of the noise is measured for lags up to this many pixels
MAX_LAG = 3


def background_mask(
    volume: np.ndarray, foreground: np.ndarray, valid: np.ndarray | None = None, margin: int = 3
) -> np.ndarray:
    """Pixels far from the foreground (``margin`` px, per slice), inside the field of view,
    and not exactly zero (scanners that mask their background write zeros)."""
    struct = np.zeros((1, 3, 3), dtype=bool)
    struct[0] = ndimage.generate_binary_structure(2, 2)
    near = ndimage.binary_dilation(foreground, structure=struct, iterations=margin)
    bg = ~near & (np.asarray(volume) != 0)
    if valid is not None:
        bg &= ndimage.binary_erosion(valid, structure=struct, iterations=1)
    return bg


def wavelet_sigma(volume: np.ndarray) -> float:
    """The wavelet (MAD of the finest scale) noise estimate, mean over up to five central
    slices: works without background, but under-reads noise a raw-data filter coloured."""
    from skimage.restoration import estimate_sigma

    n = volume.shape[0]
    idx = np.unique(np.linspace(n // 4, n - 1 - n // 4, num=min(n, 5)).astype(int))
    return float(np.mean([estimate_sigma(volume[i]) for i in idx]))


def rayleigh_sigma(volume: np.ndarray, background: np.ndarray) -> float | None:
    """Per-channel noise sigma from the background's magnitudes (None: too little background)."""
    v = np.asarray(volume, dtype=np.float64)[background]
    if v.size < MIN_BACKGROUND:
        return None
    s = math.sqrt(float(np.median(v * v)) / (2.0 * math.log(2.0)))
    return s if s > 0 and math.isfinite(s) else None


def noise_correlation(
    volume: np.ndarray, background: np.ndarray, max_lag: int = MAX_LAG
) -> np.ndarray | None:
    """``(2L+1, 2L+1)`` correlation ``rho(dy, dx)`` of the complex noise (rho(0, 0) = 1).

    From the correlation of squared background magnitudes, ``corr(M1^2, M2^2) = rho^2``;
    negative estimates (pure estimation noise) are set to 0. None: too little background.
    """
    v = np.asarray(volume, dtype=np.float64)
    bg = np.asarray(background, dtype=bool)
    if bg.sum() < MIN_BACKGROUND:
        return None
    m2 = v * v
    mean, var = m2[bg].mean(), m2[bg].var()
    if var <= 0:
        return None
    c = np.where(bg, m2 - mean, 0.0)
    L = int(max_lag)
    rho = np.zeros((2 * L + 1, 2 * L + 1))
    _, h, w = v.shape
    for dy in range(-L, L + 1):
        for dx in range(-L, L + 1):
            ys, yd = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
            xs, xd = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
            both = bg[:, ys, xs] & bg[:, yd, xd]
            n = both.sum()
            if n < MIN_BACKGROUND:
                continue
            r2 = float((c[:, ys, xs] * c[:, yd, xd])[both].sum() / n / var)
            rho[dy + L, dx + L] = math.sqrt(max(r2, 0.0))
    rho[L, L] = 1.0
    return rho


def colouring_filter(rho: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """Frequency response (``shape``, rfft2 layout) that turns white unit noise into noise of
    correlation ``rho`` and unit variance: the square root of the power spectrum."""
    if rho is None:
        return None
    h, w = shape
    L = rho.shape[0] // 2
    if h <= 2 * L or w <= 2 * L:
        return None
    acf = np.zeros((h, w))
    for dy in range(-L, L + 1):
        for dx in range(-L, L + 1):
            acf[dy % h, dx % w] = rho[dy + L, dx + L]
    psd = np.clip(np.fft.rfft2(acf).real, 0.0, None)
    # unit variance: mean of the (full) power spectrum = rho(0) = 1
    full = np.clip(np.fft.fft2(acf).real, 0.0, None)
    return np.sqrt(psd / max(full.mean(), 1e-12)).astype(np.float32)
