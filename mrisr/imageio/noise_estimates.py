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
#: background values below this fraction of the foreground's median are a masked zero
MASKED_LEVEL = 1e-4


def background_mask(
    volume: np.ndarray, foreground: np.ndarray, valid: np.ndarray | None = None, margin: int = 3
) -> np.ndarray:
    """Pixels far from the foreground (``margin`` px, per slice), inside the field of view,
    and not zero: scanners that mask their background write zeros, which resampling turns
    into values of the order of 1e-7 (below :data:`MASKED_LEVEL` of the foreground's
    median they count as zero; no MR noise is that quiet)."""
    struct = np.zeros((1, 3, 3), dtype=bool)
    struct[0] = ndimage.generate_binary_structure(2, 2)
    near = ndimage.binary_dilation(foreground, structure=struct, iterations=margin)
    v = np.abs(np.asarray(volume))
    fg = np.asarray(foreground, bool)
    level = MASKED_LEVEL * (float(np.median(v[fg])) if fg.any() else float(v.max(initial=0.0)))
    bg = ~near & (v > level)
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


#: the high-pass filter of the in-tissue estimate (Immerkaer 1996: a difference of two
#: Laplacians, blind to intensity ramps and planes)
TISSUE_FILTER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
#: block size (px) of the local estimates, and the share of the quietest blocks kept
TISSUE_BLOCK = 6
TISSUE_QUANTILE = 0.25


def tissue_sigma(
    volume: np.ndarray, foreground: np.ndarray, rho: np.ndarray | None = None
) -> float | None:
    """Per-channel noise sigma measured inside the foreground (tissue), where it matters.

    The high-pass :data:`TISSUE_FILTER` removes smooth anatomy; its response's local RMS
    over ``TISSUE_BLOCK``-pixel blocks of eroded tissue is taken at the
    ``TISSUE_QUANTILE`` quantile (the flattest blocks: edges and texture inflate the
    others) and calibrated on pure noise of correlation ``rho`` (white if None), so a
    block quantile of pure noise reads its sigma. At high SNR the magnitude's noise in
    tissue is Gaussian with the per-channel sigma. None: too little tissue."""
    v = np.asarray(volume, dtype=np.float64)
    fg = ndimage.binary_erosion(
        np.asarray(foreground, bool), structure=np.ones((1, 5, 5), bool), iterations=1
    )
    resp = ndimage.correlate(v, TISSUE_FILTER[None], mode="nearest")
    local = _block_rms(resp, fg)
    if local.size < 20:
        return None
    gain = _pure_noise_gain(rho, v.shape[1:])
    s = float(np.quantile(local, TISSUE_QUANTILE)) / gain
    return s if s > 0 and math.isfinite(s) else None


def _block_rms(resp: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """RMS of ``resp`` in each full block of foreground (blocks partly outside dropped)."""
    b = TISSUE_BLOCK
    z, h, w = resp.shape
    hh, ww = (h // b) * b, (w // b) * b
    r = resp[:, :hh, :ww].reshape(z, hh // b, b, ww // b, b)
    m = fg[:, :hh, :ww].reshape(z, hh // b, b, ww // b, b)
    full = m.all(axis=(2, 4))
    return np.sqrt((r**2).mean(axis=(2, 4))[full])


def _pure_noise_gain(rho: np.ndarray | None, shape: tuple[int, int]) -> float:
    """The block-RMS quantile :func:`tissue_sigma` reads on unit noise of correlation
    ``rho`` (simulated, deterministic)."""
    rng = np.random.default_rng(12345)
    h, w = max(96, min(shape[0], 256)), max(96, min(shape[1], 256))
    noise = rng.standard_normal((4, h, w))
    f = colouring_filter(rho, (h, w))
    if f is not None:
        noise = np.fft.irfft2(np.fft.rfft2(noise) * f, s=(h, w))
    resp = ndimage.correlate(noise, TISSUE_FILTER[None], mode="nearest")
    local = _block_rms(resp, np.ones_like(noise, bool))
    return float(np.quantile(local, TISSUE_QUANTILE))
