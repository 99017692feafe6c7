"""The per-patch part of the learned degradation: Rician noise, PSF-width and bias jitter.

The stored synthetic LR of a configuration is the noise-free image of the HR scan under
the learned PSF. What a real LR scan adds, drawn afresh for every training patch in the SR
data loader (an augmentation, never baked into the stored LR), is modelled here:

* **noise**: the magnitude of the synthetic LR plus complex Gaussian noise,
  ``|x + sigma (n1 + i n2)|``, so the statistics are Rician like a real magnitude scan. The
  level ``sigma`` and the spatial colour ``rho`` (the scanner's raw-data filter and the
  resampling onto the working grid correlate neighbouring pixels) are measured on the
  background of the real LR scans of the fold's training cases, on the working grid
  (:mod:`mrisr.imageio.noise_estimates`, recorded by preprocessing).
* **robustness to estimation error** (planned): ``sigma`` log-uniform within
  ``+- sigma_jitter``; the PSF width within ``+- kernel_width_jitter`` (a mild blur or
  sharpening, ``x - beta * laplacian(x)``, whose variance change matches that width change
  for the learned kernel); a smooth multiplicative intensity bias of log-amplitude up to
  ``bias`` over the patch, the same on LR and HR (the network must keep intensities, not
  learn the bias away).

Determinism: :meth:`PatchDegradation.apply` draws everything from the generator it is
given; the loader seeds it from ``(seed, iteration, rank)``, so resuming reproduces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mrisr.imageio.noise_estimates import colouring_filter


@dataclass
class PatchDegradation:
    """Noise, width and bias jitter applied to a batch of (LR, HR) training patches."""

    sigma: float  # noise sd per channel, normalised LR units
    rho: list | None = None  # (2L+1, 2L+1) correlation of the noise, None: white
    sigma_jitter: float = 0.3
    kernel_width_jitter: float = 0.0
    kernel_variance_lr: float = 0.5  # the learned PSF's variance in LR pixels^2 (per axis)
    bias: float = 0.0
    _filters: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_plans(cls, section: dict | None, noise: dict | None) -> PatchDegradation | None:
        """From a configuration's ``training_noise`` section and the measured ``noise``."""
        if not section or section.get("model", "none") == "none" or not noise:
            return None
        return cls(
            sigma=float(noise["sigma"]),
            rho=noise.get("rho"),
            sigma_jitter=float(section.get("sigma_jitter", 0.0)),
            kernel_width_jitter=float(section.get("kernel_width_jitter", 0.0)),
            kernel_variance_lr=float(noise.get("kernel_variance_lr", 0.5)),
            bias=float(section.get("bias", 0.0)),
        )

    def _colour(self, shape: tuple[int, int]) -> np.ndarray | None:
        if self.rho is None:
            return None
        if shape not in self._filters:
            self._filters[shape] = colouring_filter(np.asarray(self.rho), shape)
        return self._filters[shape]

    def noise(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Unit-variance noise of the measured colour, ``shape = (..., h, w)``."""
        n = rng.standard_normal(shape, dtype=np.float32)
        f = self._colour(tuple(shape[-2:]))
        if f is None:
            return n
        return np.fft.irfft2(np.fft.rfft2(n) * f, s=shape[-2:]).astype(np.float32)

    def apply(
        self, lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``lr (B, 1, p, p)``, ``hr (B, 1, sp, sp)`` -> degraded copies (float32)."""
        b = lr.shape[0]
        lr = lr.astype(np.float32, copy=True)
        hr = hr.astype(np.float32, copy=True)
        if self.bias > 0:
            c = rng.uniform(-self.bias, self.bias, size=(b, 2)).astype(np.float32)
            for arr in (lr, hr):
                n = arr.shape[-1]
                t = (np.arange(n, dtype=np.float32) + 0.5) / n - 0.5
                field_ = np.exp(c[:, 0, None, None] * t[:, None] + c[:, 1, None, None] * t[None])
                arr *= field_[:, None]
        if self.kernel_width_jitter > 0:
            # variance change of +-((1 + j)^2 - 1) of the kernel's variance; x - beta lap(x)
            # shifts the variance by -2 beta
            dv = ((1 + self.kernel_width_jitter) ** 2 - 1) * self.kernel_variance_lr
            beta = rng.uniform(-dv / 2, dv / 2, size=b).astype(np.float32)
            p = np.pad(lr, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
            lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
            lap -= 4 * lr
            lr -= beta[:, None, None, None] * lap
        if self.sigma > 0:
            j = math.log1p(self.sigma_jitter)
            s = self.sigma * np.exp(rng.uniform(-j, j, size=b)).astype(np.float32)
            s = s[:, None, None, None]
            n = self.noise((2, *lr.shape), rng)
            lr = np.sqrt((lr + s * n[0]) ** 2 + (s * n[1]) ** 2)
        return lr.astype(np.float32), hr
