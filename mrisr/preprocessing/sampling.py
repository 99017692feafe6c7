"""Gradient-weighted crop sampling (KernelGAN's rule, vectorised over slices).

Two steps:
1. :func:`gradient_weight_map` (preprocessing, crop-size independent): |gx|, |gy| and the
   gradient magnitude of each in-plane slice, each clipped at its 97th percentile and
   normalised to sum 1, summed, then blurred with a 5x5 box.
2. :func:`crop_center_probabilities` (at sampling time, per crop size): a box filter of
   half the crop size, a zero border of half the crop size (so that every crop fits), and
   normalisation to a probability per slice.

Arrays are ``(z, y, x)`` with ``z`` the through-plane axis; a 2D array is one slice.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def gradient_weight_map(
    image: np.ndarray, clip_percentile: float = 97.0, window: int = 5
) -> np.ndarray:
    """Per-pixel sampling weight of each slice, float32, same shape as ``image``."""
    vol = np.asarray(image, dtype=np.float32)
    squeeze = vol.ndim == 2
    if squeeze:
        vol = vol[None]
    gy, gx = np.gradient(vol, axis=(1, 2))
    gmag = np.sqrt(gx * gx + gy * gy)
    total = np.zeros_like(vol)
    for g in (np.abs(gx), np.abs(gy), gmag):
        lim = np.percentile(g.reshape(len(g), -1), clip_percentile, axis=1)[:, None, None]
        g = np.minimum(g, lim)
        s = g.sum(axis=(1, 2), keepdims=True)
        total += np.divide(g, s, out=np.zeros_like(g), where=s > 0)
    out = ndimage.uniform_filter(total, size=(1, window, window), mode="constant")
    out = out.astype(np.float32)
    return out[0] if squeeze else out


def crop_center_probabilities(weight: np.ndarray, crop: int) -> np.ndarray:
    """Probability of each pixel being the centre of a ``crop`` x ``crop`` crop.

    Returned with the shape of ``weight`` (2D or per slice of a 3D stack), each slice
    summing to 1; pixels closer than ``crop // 2`` to the border have probability 0. A
    slice with no weight falls back to uniform over its valid centres; a slice smaller
    than the crop gets all zeros.
    """
    w = np.asarray(weight, dtype=np.float64)
    squeeze = w.ndim == 2
    if squeeze:
        w = w[None]
    half = crop // 2
    blurred = ndimage.uniform_filter(w, size=(1, max(half, 1), max(half, 1)), mode="constant")
    valid = np.zeros(w.shape[1:], dtype=bool)
    # A centre c takes rows [c - half, c - half + crop); it must fit inside the slice.
    if w.shape[1] >= crop and w.shape[2] >= crop:
        valid[half : w.shape[1] - (crop - half) + 1, half : w.shape[2] - (crop - half) + 1] = True
    blurred = np.where(valid[None], np.maximum(blurred, 0.0), 0.0)
    s = blurred.sum(axis=(1, 2), keepdims=True)
    uniform = valid[None] / max(valid.sum(), 1)
    prob = np.where(s > 0, blurred / np.where(s > 0, s, 1.0), uniform)
    return prob[0] if squeeze else prob


def sample_crop_corners(
    prob: np.ndarray, crop: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``n`` top-left corners ``(row, col)`` of crops from a 2D centre-probability map."""
    flat = prob.ravel()
    idx = rng.choice(flat.size, size=n, p=flat / flat.sum())
    rows, cols = np.divmod(idx, prob.shape[1])
    return np.stack([rows - crop // 2, cols - crop // 2], axis=1)
