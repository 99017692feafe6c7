"""Gaussian blur + decimation (the paper's "GB" baseline) as a registered degradation model.

LR = (g_sigma * HR)[::s, ::s] with a sampled Gaussian of standard deviation ``sigma`` HR
pixels, centred on the LR pixel centre ``s*i + (s-1)/2`` (pixel-shuffle convention) and
reflected borders. The paper fixes sigma = 1.5 by visual/numerical similarity to real LR;
the planner fits it on the dataset's pairs (``"fitted": true``). The kernel and the
correlate-and-decimate are :mod:`mrisr.degradation.kernels`'.

Parameters: ``{"name": "gaussian", "sigma": float or [sigma_y, sigma_x]}`` (other keys
such as ``fitted`` or ``ssim`` are kept as provenance and ignored).
"""

from __future__ import annotations

import numpy as np

from mrisr.degradation.base import DEGRADATIONS, KernelDegradation, PlanningContext
from mrisr.degradation.kernels import gaussian_kernel

#: the paper's GB sigma (HR pixels), chosen by visual/numerical similarity to real LR
PAPER_SIGMA = 1.5


@DEGRADATIONS.register
class GaussianDegradation(KernelDegradation):
    """Gaussian blur of ``sigma`` HR pixels, then decimation by ``scale``."""

    name = "gaussian"
    label = "Gaussian blur"
    plan_order = 30

    @classmethod
    def plan(cls, fingerprint, context: PlanningContext) -> dict[str, dict]:
        """GB+EDSR: sigma fitted on the pairs (best mean SSIM of blurred, decimated HR to real
        LR over the fingerprint's sigma grid), else the paper's 1.5."""
        sigmas = fingerprint.gaussian_fit_sigmas
        curves = [c.pair.gaussian_fit_ssim for c in fingerprint.pairs]
        curves = [c for c in curves if not np.any(np.isnan(c))]
        if curves:
            mean = np.mean(np.asarray(curves), axis=0)
            i = int(np.argmax(mean))
            sigma = float(sigmas[i])
            context.decide(
                "gaussian_sigma",
                f"{sigma:g} HR px: best mean SSIM ({mean[i]:.3f}) of blurred, decimated HR to "
                f"real LR over {len(curves)} pairs (paper's choice by similarity: 1.5)",
            )
            section = {"name": "gaussian", "sigma": sigma, "fitted": True, "ssim": float(mean[i])}
        else:
            context.decide("gaussian_sigma", f"{PAPER_SIGMA} HR px (paper): no pairs to fit it on")
            section = {"name": "gaussian", "sigma": PAPER_SIGMA, "fitted": False}
        return {
            "gaussian_edsr": context.configuration(
                "GB+EDSR",
                "EDSR trained on Gaussian-blurred, decimated HR (GB+EDSR)",
                section,
                raw_input=False,
            )
        }

    @classmethod
    def plan_summary(cls, section: dict) -> tuple[str, str]:
        how = "fitted to real LR" if section.get("fitted") else "paper default"
        return "Gaussian sigma", f"{section['sigma']:g} HR px ({how})"

    def __init__(self, params: dict, scale: int):
        super().__init__(params, scale)
        if "sigma" not in self.params:
            raise ValueError("the 'gaussian' degradation needs a 'sigma' (in HR pixels)")
        sigma = self.params["sigma"]
        sig = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
        if sig.size not in (1, 2) or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
            raise ValueError(
                f"gaussian 'sigma' must be a positive number or [sigma_y, sigma_x], got {sigma!r}"
            )
        self.sigma: float | tuple[float, float] = (
            float(sig[0]) if sig.size == 1 else (float(sig[0]), float(sig[1]))
        )
        self.kernel = gaussian_kernel(self.sigma, self.scale)

    def psf_info(self) -> dict:
        return {"psf_sigma_hr": list(np.broadcast_to(np.asarray(self.sigma, dtype=float), 2))}
