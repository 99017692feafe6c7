"""Blur kernels: the one kernel module (construction, sizes, correlate-and-decimate).

Conventions (shared with :mod:`mrisr.networks.linear_generator`)
-----------------------------------------------------------------
* Kernels are 2D arrays indexed ``[row, col]`` = ``[y, x]`` and are **correlation**
  kernels (PyTorch ``conv2d``; no flip).
* Decimation phase: for an integer scale ``s``, LR pixel ``i`` stands for HR pixels
  ``s*i .. s*i+s-1``; its physical centre is at HR position ``s*i + (s-1)/2``.
* A kernel of odd size ``K`` is applied with its centre tap ``(K-1)/2`` over HR pixel
  ``s*i`` (:func:`degrade_with_kernel`). Its centre of mass must therefore sit at
  ``(K-1)/2 + (s-1)/2`` (KernelGAN's ``wanted_center_of_mass`` for odd sizes), so that the
  response of LR pixel ``i`` is centred on ``s*i + (s-1)/2``. For ``s = 2`` and ``K = 13``
  that is 6.5. :func:`~mrisr.degradation.kernel_analysis.post_process_kernel` shifts
  estimated kernels there.
* The generator's "valid" output ``m`` covers HR pixels ``s*m .. s*m+K-1``; with a kernel
  centred as above, it is LR pixel ``m + (K-1)/(2s)`` (the crop border is shaved).
  :func:`lr_crop_size` is that count for an HR crop.

Statistics, post-processing, plausibility and figures of estimated kernels:
:mod:`mrisr.degradation.kernel_analysis`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from mrisr.networks.generator_structure import G_STRUCTURE, receptive_field, valid_output_size
from mrisr.utilities.scale import check_scale

if TYPE_CHECKING:
    import torch

#: the size of the learned kernels: the linear generator's receptive field (13)
KERNEL_SIZE = receptive_field(G_STRUCTURE)


def lr_crop_size(hr_crop: int, scale: int, kernel_size: int = KERNEL_SIZE) -> int:
    """LR pixels the generator makes from an ``hr_crop`` HR crop ("valid" correlation)."""
    return valid_output_size(hr_crop, kernel_size, scale)


def wanted_center(size: int, scale: int) -> float:
    """Centre of mass (per axis) a ``size`` kernel needs for decimation by ``scale``.

    KernelGAN's ``k_size // 2 + 0.5 * (scale - k_size % 2)``; ``(size-1)/2 + (scale-1)/2``
    for odd sizes.
    """
    return size // 2 + 0.5 * (scale - size % 2)


# --------------------------------------------------------------------------- construction
def gaussian_kernel(
    sigma: float | tuple[float, float], scale: int = 2, size: int | None = None
) -> np.ndarray:
    """2D Gaussian (sigma in HR pixels, one or per axis (rows, cols)), sum 1, centred at
    :func:`wanted_center` for ``scale`` (``scale = 1``: on the middle tap).

    With the correlation ``LR[i] = sum_j k[j] HR[s*i + j - size//2]`` LR pixel ``i`` is
    centred on HR position ``s*i + (s-1)/2`` (the pixel-shuffle convention of mrisr).
    ``size`` None: ``2*ceil(3 sigma + (s-1)/2) + 1`` (the Gaussian model's support).
    """
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    if sy <= 0 or sx <= 0:
        raise ValueError("Gaussian sigmas must be positive")
    if size is None:
        size = 2 * int(np.ceil(3 * max(sy, sx) + (scale - 1) / 2)) + 1
    r = np.arange(size) - wanted_center(size, scale)
    gy = np.exp(-0.5 * (r / max(sy, 1e-6)) ** 2)
    gx = np.exp(-0.5 * (r / max(sx, 1e-6)) ** 2)
    k = np.outer(gy, gx)
    return (k / k.sum()).astype(np.float32)


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (support [-2, 2]); a = -0.5 is MATLAB's bicubic."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    return np.where(
        x <= 1,
        (a + 2) * x**3 - (a + 3) * x**2 + 1,
        np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0),
    )


def bicubic_taps(scale: int, a: float = -0.5) -> np.ndarray:
    """1D anti-aliased bicubic weights on an odd grid centred on HR pixel ``s*i``.

    Tap ``j`` weighs HR pixel ``s*i + j - K//2``; the weights are centred on
    ``K//2 + (s-1)/2`` (the LR pixel centre) and sum to 1. ``K = 2*ceil(2s + (s-1)/2) + 1``
    covers the stretched cubic's support ``|t - (s-1)/2| < 2s``.
    """
    s = check_scale(scale)
    half = math.ceil(2 * s + (s - 1) / 2)
    t = np.arange(-half, half + 1, dtype=np.float64)
    w = keys_cubic((t - (s - 1) / 2) / s, a) / s
    return w / w.sum()


def bicubic_kernel(scale: int, a: float = -0.5) -> np.ndarray:
    """2D (outer product) bicubic decimation kernel for :func:`degrade_with_kernel`."""
    w = bicubic_taps(scale, a)
    return np.outer(w, w).astype(np.float32)


def bicubic_kernel_1d(scale: int) -> np.ndarray:
    """MATLAB ``imresize`` bicubic downscaling weights (Keys a=-0.5, anti-aliased).

    Returns the taps around one LR pixel, centred on the LR pixel centre: ``4*scale``
    taps for even scales (offsets +-0.5 .. +-(2s-0.5)), ``4*scale-1`` for odd scales
    (offsets -(2s-1) .. 2s-1); its centre is the middle of the array. For ``scale = 2``
    this is KernelGAN's fixed bicubic kernel (outer product of
    ``[-0.0117, -0.0352, 0.1133, 0.4336, 0.4336, 0.1133, -0.0352, -0.0117]``).
    """
    s = check_scale(scale)
    n = 4 * s if s % 2 == 0 else 4 * s - 1
    d = np.arange(n, dtype=np.float64) - (n - 1) / 2
    w = keys_cubic(d / s) / s
    return (w / w.sum()).astype(np.float64)


def boundary_penalty_mask(size: int = 13, penalty_scale: float = 30.0) -> np.ndarray:
    """KernelGAN's ``create_penalty_mask``: weights penalising values near the border.

    ``penalty_scale * (1 - g / max g)`` with ``g`` a Gaussian of sigma ``size``, and the
    central ``size - 2*margin`` square set to zero (``margin = (size - center)//2 - 1``,
    ``center = size//2 + size%2``): for 13 only the outer two rings are penalised.
    """
    t = np.arange(-size // 2 + 1, size // 2 + 1, dtype=np.float64)
    g1 = np.exp(-(t**2) / (2 * size**2))
    g = np.outer(g1, g1)
    mask = 1 - g / g.max()
    center = size // 2 + size % 2
    margin = (size - center) // 2 - 1
    if margin > 0:
        mask[margin:-margin, margin:-margin] = 0
    return (penalty_scale * mask).astype(np.float32)


# --------------------------------------------------------------------------- application
def _correlate_symmetric(hr: np.ndarray, kernel: np.ndarray, scale: int) -> np.ndarray:
    """``scipy.ndimage.correlate`` of each slice (half-sample symmetric borders), every
    ``scale``-th pixel kept: ``(z, H // scale, W // scale)``."""
    vol = np.asarray(hr, dtype=np.float32)
    squeeze = vol.ndim == 2
    if squeeze:
        vol = vol[None]
    out = ndimage.correlate(vol, np.asarray(kernel)[None].astype(np.float32), mode="reflect")
    h, w = vol.shape[1] // scale, vol.shape[2] // scale
    out = out[:, ::scale, ::scale][:, :h, :w]
    return out[0] if squeeze else out


def degrade_with_kernel(
    hr_slices: np.ndarray | torch.Tensor,
    kernel: np.ndarray | torch.Tensor,
    scale: int,
    chunk: int = 64,
    border: str = "mirror",
) -> np.ndarray:
    """Blur HR slices with a kernel and decimate by ``scale``: the one correlate-and-decimate.

    ``border="symmetric"`` (half-sample symmetric, MATLAB ``imresize``'s padding, via
    ``scipy.ndimage.correlate``) is what the fixed models (Gaussian, bicubic) use, for any
    kernel size; ``border="mirror"`` (whole-sample mirror, ``torch`` reflect padding) is
    what the learned DSGAN kernels use, as they were trained. Both place the centre tap
    ``K//2`` over HR pixel ``s*i``.

    ``hr_slices``: ``(Z, H, W)`` or ``(H, W)``; ``kernel``: ``(K, K)`` or ``(Z, K, K)`` (one
    per slice; mirror only), ``K`` odd. Correlation (no flip): LR pixel ``i`` is
    ``sum_t k[t] hr[s*i - (K-1)/2 + t]``, centred on HR position ``s*i + (s-1)/2`` for a
    kernel centred by ``post_process_kernel``; exactly ``H//s x W//s`` pixels, float32
    numpy. Mirror: ``conv2d`` (grouped for per-slice kernels), ``chunk`` slices at a time.
    """
    s = check_scale(scale)
    if border == "symmetric":
        return _correlate_symmetric(hr_slices, kernel, s)
    if border != "mirror":
        raise ValueError(f"border must be 'symmetric' or 'mirror', not {border!r}")
    import torch  # deferred: planning and the fixed models use this module without torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(hr_slices, dtype=np.float32))
    squeeze = x.dim() == 2
    if squeeze:
        x = x[None]
    if x.dim() != 3:
        raise ValueError(f"expected (Z, H, W) or (H, W) slices, got shape {tuple(x.shape)}")
    k = torch.as_tensor(np.asarray(kernel, dtype=np.float32))
    if k.dim() not in (2, 3) or k.shape[-1] != k.shape[-2] or k.shape[-1] % 2 == 0:
        raise ValueError(f"kernel must be (K, K) or (Z, K, K) with K odd, got {tuple(k.shape)}")
    per_slice = k.dim() == 3
    if per_slice and k.shape[0] != x.shape[0]:
        raise ValueError(f"{k.shape[0]} kernels for {x.shape[0]} slices")
    z, h, w = x.shape
    p = (k.shape[-1] - 1) // 2
    if h <= p or w <= p:
        raise ValueError(f"slices of {h}x{w} are too small for a {k.shape[-1]} kernel")
    out = np.empty((z, h // s, w // s), dtype=np.float32)
    with torch.no_grad():
        for a in range(0, z, chunk):
            b = min(a + chunk, z)
            xp = F.pad(x[a:b, None], (p, p, p, p), mode="reflect")
            if per_slice:
                y = F.conv2d(
                    xp.reshape(1, b - a, *xp.shape[2:]), k[a:b, None], stride=s, groups=b - a
                )
                y = y[0]
            else:
                y = F.conv2d(xp, k[None, None], stride=s)[:, 0]
            out[a:b] = y[:, : h // s, : w // s].numpy()
    return out[0] if squeeze else out


def gaussian_degrade(hr: np.ndarray, sigma: float, scale: int) -> np.ndarray:
    """The paper's GB degradation: Gaussian blur of ``sigma`` HR pixels, then decimation."""
    return degrade_with_kernel(hr, gaussian_kernel(sigma, scale), scale, border="symmetric")
