"""Anti-aliased bicubic decimation (MATLAB ``imresize(hr, 1/s, 'bicubic')``).

The classic "bicubic" LR of the SR literature, used by the MSCN comparisons and as the
fixed starting point of the DSN. For downscaling, ``imresize`` stretches the Keys cubic
(a = -0.5) by the scale factor to anti-alias: LR pixel ``i`` (centred on HR position
``s*i + (s-1)/2``, the pixel-shuffle convention) is

    LR[i] = sum_t w(t) HR[s*i + t],   w(t) = keys((t - (s-1)/2) / s) / s   (normalised to sum 1)

separably along rows and columns, with half-sample symmetric borders (``imresize``'s
``symmetric`` padding = scipy's ``reflect``). The taps are identical to
:func:`mrisr.degradation.kernels.bicubic_kernel_1d` (KernelGAN's fixed bicubic kernel),
laid out on an odd grid whose centre tap sits on HR pixel ``s*i`` so that
:func:`~mrisr.degradation.gaussian.apply_kernel_and_decimate` applies it.

Parameters: ``{"name": "bicubic"}`` (optionally ``"a"``, the Keys parameter, default -0.5).
"""

from __future__ import annotations

import math

import numpy as np

from mrisr.degradation.base import DEGRADATIONS, Degradation, as_slice_stack, check_scale
from mrisr.degradation.gaussian import apply_kernel_and_decimate


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
    """2D (outer product) bicubic decimation kernel for :func:`apply_kernel_and_decimate`."""
    w = bicubic_taps(scale, a)
    return np.outer(w, w).astype(np.float32)


@DEGRADATIONS.register(name="bicubic")
class BicubicDegradation(Degradation):
    """Anti-aliased bicubic downscaling by ``scale`` (MATLAB ``imresize`` style)."""

    name = "bicubic"

    def __init__(self, params: dict | None, scale: int):
        super().__init__(params or {"name": "bicubic"}, scale)
        a = self.params.get("a", -0.5)
        if not isinstance(a, (int, float)) or not math.isfinite(a):
            raise ValueError(f"bicubic 'a' must be a number, got {a!r}")
        self.a = float(a)
        self.kernel = bicubic_kernel(self.scale, self.a)

    def degrade(self, hr: np.ndarray) -> np.ndarray:
        vol, squeeze = as_slice_stack(hr, self.scale)
        out = apply_kernel_and_decimate(vol, self.kernel, self.scale)
        return out[0] if squeeze else out
