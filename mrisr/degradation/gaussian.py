"""Gaussian blur + decimation (the paper's GB baseline) and its kernel."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def gaussian_kernel(
    sigma: float | tuple[float, float], scale: int, size: int | None = None
) -> np.ndarray:
    """2D Gaussian (sigma in HR pixels, per axis (rows, cols)), sum 1, centred for decimation.

    Centre at ``size // 2 + (scale - 1) / 2`` so that with the correlation
    ``LR[i] = sum_j k[j] HR[s*i + j - size//2]`` LR pixel ``i`` is centred on HR position
    ``s*i + (s-1)/2`` (the pixel-shuffle convention used throughout mrisr).
    """
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    if size is None:
        size = 2 * int(np.ceil(3 * max(sy, sx) + (scale - 1) / 2)) + 1
    c = size // 2 + (scale - 1) / 2
    r = np.arange(size) - c
    gy = np.exp(-0.5 * (r / max(sy, 1e-6)) ** 2)
    gx = np.exp(-0.5 * (r / max(sx, 1e-6)) ** 2)
    k = np.outer(gy, gx)
    return (k / k.sum()).astype(np.float32)


def apply_kernel_and_decimate(hr: np.ndarray, kernel: np.ndarray, scale: int) -> np.ndarray:
    """Correlate each slice of ``hr`` (z, H, W) with ``kernel`` and keep every ``scale``-th pixel.

    Output is (z, H // scale, W // scale); borders are reflected.
    """
    vol = np.asarray(hr, dtype=np.float32)
    squeeze = vol.ndim == 2
    if squeeze:
        vol = vol[None]
    out = ndimage.correlate(vol, kernel[None].astype(np.float32), mode="reflect")
    h, w = vol.shape[1] // scale, vol.shape[2] // scale
    out = out[:, ::scale, ::scale][:, :h, :w]
    return out[0] if squeeze else out


def gaussian_degrade(hr: np.ndarray, sigma: float, scale: int) -> np.ndarray:
    return apply_kernel_and_decimate(hr, gaussian_kernel(sigma, scale), scale)
