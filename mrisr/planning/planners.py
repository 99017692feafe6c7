"""Planners: from a dataset fingerprint to plans.json.

A planner decides every hyper-parameter from the fingerprint and records the reason for
each decision (``plans["decisions"]``), which ``mrisr_plan_and_preprocess`` prints.
New planners subclass :class:`DefaultPlanner`, override one decision, and register a name.
"""

from __future__ import annotations

import copy

import numpy as np

from mrisr.degradation.dsgan.params import DEFAULT_DSGAN_PARAMS
from mrisr.degradation.gaussian import PAPER_SIGMA
from mrisr.degradation.kernels import KERNEL_SIZE, lr_crop_size
from mrisr.planning.fingerprint import DatasetFingerprint, integer_scale
from mrisr.planning.real_lr_decisions import PAPER_DSGAN, RealLRDecisions
from mrisr.planning.through_plane_plans import SECONDS as THROUGH_PLANE_SECONDS
from mrisr.planning.through_plane_plans import plan_through_plane, through_plane_only
from mrisr.plans import DEFAULT_PLANS, Plans
from mrisr.utilities.registry import Registry

PLANNERS: Registry[type] = Registry("planner")

D_FIELD = 7  # receptive field of the patch discriminator
KERNELGAN_RANGE = 2.0  # KernelGAN's thresholds are on a [-1, 1] intensity scale


@PLANNERS.register
class DefaultPlanner(RealLRDecisions):
    """The planner of the paper's method, adapted to each dataset by its fingerprint."""

    plans_name = DEFAULT_PLANS
    hr_crop = 64
    edsr_lr_patch = 48
    dsgan_iterations = 3000
    through_plane_seconds = THROUGH_PLANE_SECONDS
    nlm_h_factor = 0.8  # NLM strength h = factor x estimated noise sigma (scikit-image advice)
    intensity_range = 1.0  # normalised foreground intensities lie in about [0, 1]

    def __init__(self, fingerprint: DatasetFingerprint):
        self.fp = fingerprint
        self.decisions: dict[str, str] = {}

    def _decide(self, key: str, why: str) -> None:
        self.decisions[key] = why

    # ---- geometry
    def plan_hr_spacing(self) -> float:
        sp = [float(np.mean(s.inplane_spacing)) for s in self.fp.scans("hr")]
        h = float(np.median(sp))
        self._decide(
            "hr_inplane_spacing", f"{h:.4g} mm: median HR in-plane spacing of {len(sp)} scans"
        )
        return h

    def plan_real_lr_spacing(self) -> float | None:
        """Median real LR in-plane spacing (predict warns far from it); None: no LR."""
        sp = [float(np.mean(s.inplane_spacing)) for s in self.fp.scans("lr")]
        return float(np.median(sp)) if sp else None

    def plan_scale(self, hr_spacing: float) -> int:
        pairs = self.fp.pairs
        if pairs:
            ratios = [float(np.mean(c.pair.inplane_ratio)) for c in pairs]
            src = f"median LR/HR in-plane ratio of {len(pairs)} pairs"
        else:
            ratios = [float(np.mean(s.inplane_spacing)) / hr_spacing for s in self.fp.scans("lr")]
            src = f"median LR in-plane spacing / HR spacing over {len(ratios)} LR scans"
        r = float(np.median(ratios))
        s = integer_scale(ratios)
        self._decide("scale", f"x{s}: {src} is {r:.3g}, rounded to an integer for pixel shuffle")
        return s

    # ---- intensities and noise
    def plan_normalization(self) -> dict:
        self._decide(
            "normalization",
            "per scan, HR and LR separately: divide by the foreground 99.5th percentile "
            "(MR magnitude has a physical zero; LR and HR scales differ)",
        )
        return {
            "scheme": "percentile_scale",
            "percentile": 99.5,
            "separate_hr_lr": True,
            "intensity_range": self.intensity_range,
        }

    def plan_denoising(self) -> dict:
        sig = [s.noise_sigma_normalised for s in self.fp.scans("lr") if s.noise_sigma_normalised]
        sigma = float(np.median(sig)) if sig else 0.0
        if sigma < 1e-3:
            self._decide("denoising", f"none: LR noise sigma {sigma:.2g} is negligible")
            return {"method": "none", "sigma": sigma, "h": 0.0}
        h = self.nlm_h_factor * sigma
        self._decide(
            "denoising",
            f"NLM on LR, h = {h:.3g} ({self.nlm_h_factor} x median LR noise sigma {sigma:.3g} "
            "of normalised intensity, wavelet estimate)",
        )
        return {
            "method": "nlm",
            "sigma": sigma,
            "h": h,
            "patch_size": 5,
            "patch_distance": 6,
            "fast_mode": True,
        }

    def plan_registration(self) -> bool:
        if not self.fp.pairs:
            return False
        self._decide(
            "register_pairs",
            "rigid (Euler 3D, correlation) registration of each pair's LR to its HR: the "
            "head moves between the two series and the headers do not record it",
        )
        return True

    # ---- DSGAN
    def plan_kernel_mode(self) -> str:
        pairs = self.fp.pairs
        if pairs and all(c.pair.slices_match for c in pairs):
            self._decide(
                "kernel_mode",
                "per_slice (paper): every pair has LR slices at the HR slice positions",
            )
            return "per_slice"
        if pairs:
            self._decide(
                "kernel_mode", "per_volume: pairs exist but their slices do not match one to one"
            )
            return "per_volume"
        self._decide("kernel_mode", "per_dataset: no pairs, one kernel from all unpaired LR and HR")
        return "per_dataset"

    def plan_dsgan_seeds(self, kernel_mode: str) -> int:
        seeds = 1 if kernel_mode == "per_slice" else 3
        self._decide(
            "dsgan_seeds",
            f"{seeds} GAN(s) per unit"
            + (
                ": one kernel per slice, many units"
                if seeds == 1
                else f" ({kernel_mode}: few units), the element-wise median kernel: one GAN's "
                "estimate varies with its seed (bench_dsgan --quality: median-of-3 kernel L1 "
                "error 0.31 of the Gaussian fit's vs 0.38 for single GANs)"
            ),
        )
        return seeds

    def plan_dsgan(self, scale: int, kernel_mode: str) -> dict:
        min_hr = min(min(s.shape_zyx[1:]) for s in self.fp.scans("hr"))
        min_lr_work = min(
            int(
                min(s.extent_mm[i] for i in range(3) if i != s.through_plane_axis)
                // (scale * self._hr_spacing)
            )
            for s in self.fp.scans("lr")
        )
        hr_crop = self.hr_crop
        smallest_hr_crop = KERNEL_SIZE + scale * (D_FIELD - 1)  # D must see >= 7x7 LR pixels
        while hr_crop > smallest_hr_crop and (
            hr_crop > min_hr or lr_crop_size(hr_crop, scale) > min_lr_work
        ):
            hr_crop -= 2
        lr_crop = lr_crop_size(hr_crop, scale)
        why = f"HR crop {hr_crop}, LR crop {lr_crop} = (HR crop - receptive field {KERNEL_SIZE}) // {scale} + 1"
        if hr_crop < self.hr_crop:
            why += f" (reduced from {self.hr_crop}: smallest HR slice {min_hr} px, LR {min_lr_work} px)"
        self._decide("dsgan_crops", why)
        ref = self.intensity_range / KERNELGAN_RANGE
        it = self.dsgan_iterations
        self._decide(
            "dsgan_schedule",
            f"{it} iterations; bicubic threshold 0.4 x {ref**2:.3g} (MSE on this dataset's "
            f"[0, {self.intensity_range:g}] scale vs KernelGAN's [-1, 1]); lr / 10 at 1/4, 1/2, 3/4",
        )
        d = copy.deepcopy(DEFAULT_DSGAN_PARAMS)  # KernelGAN's values; this dataset's below
        d["schedule"]["bicubic_threshold"] = 0.4 * ref**2
        return {
            "name": "dsgan",
            "kernel_mode": kernel_mode,
            "seeds_per_unit": self.plan_dsgan_seeds(kernel_mode),
            **d,
            "iterations": it,
            "hr_crop": hr_crop,
            "lr_crop": lr_crop,
            "kernel_size": KERNEL_SIZE,
            "lr_decay_iterations": [it // 4, it // 2, 3 * it // 4],
            "d_input_noise_sd": (1.0 / 255.0) * ref,
        }

    # ---- EDSR
    def plan_edsr(self, scale: int) -> dict:
        sizes = []
        for s in self.fp.scans("lr"):
            inpl = [s.extent_mm[i] for i in range(3) if i != s.through_plane_axis]
            sizes.append(int(min(inpl) // (scale * self._hr_spacing)))
        for s in self.fp.scans("hr"):
            sizes.append(min(s.shape_zyx[1:]) // scale)
        smallest = min(sizes)
        patch = min(self.edsr_lr_patch, smallest - smallest % 2)
        n_slices = sum(s.shape_zyx[0] for s in self.fp.scans("hr"))
        iterations = int(np.clip(400 * n_slices, 20_000, 150_000) // 1000 * 1000)
        why = f"LR patch {patch} -> HR {patch * scale}"
        if patch < self.edsr_lr_patch:
            why += f" (reduced from {self.edsr_lr_patch}: smallest LR slice {smallest} px)"
        self._decide("edsr_patch", why)
        self._decide(
            "edsr_iterations",
            f"{iterations}: 400 per HR slice ({n_slices} slices), within [20k, 150k]; "
            "Adam 1e-4 halved at 1/2 and 3/4",
        )
        return {
            "name": "edsr",
            "lr_patch": patch,
            "hr_patch": patch * scale,
            "num_blocks": 16,
            "num_features": 64,
            "res_scale": 1.0,
            "batch_size": 16,
            "iterations": iterations,
            "learning_rate": 1e-4,
            "betas": [0.9, 0.999],
            "lr_milestones": [iterations // 2, 3 * iterations // 4],
            "lr_gamma": 0.5,
            "grad_clip_norm": 1.0,
            "augmentation": "dihedral8",
            "checkpoint_every": max(iterations // 20, 100),
            "validate_every": max(iterations // 10, 100),
        }

    def plan_kspace_acquisition(self, scale: int) -> dict:
        if self.fp.pairs:
            r = np.median([c.pair.inplane_ratio for c in self.fp.pairs], axis=0)
        else:
            lr = [s.inplane_spacing for s in self.fp.scans("lr")]
            r = np.median(lr, axis=0) / self._hr_spacing
        # inplane_ratio is in SimpleITK order (a, b) = array axes (x, y)
        band = [float(min(1.0, scale / r[1])), float(min(1.0, scale / r[0]))]
        learned = bool(self.fp.pairs)
        self._decide(
            "kspace_band",
            f"band {band[0]:.3f} x {band[1]:.3f} of the x{scale} LR grid's: the real LR holds HR "
            f"frequencies up to 1 / (2 x {r[1]:.3g} x {r[0]:.3g} HR px), the exact ratio; window "
            + (
                "learned from the registered pairs" if learned else "Hamming (no pairs to learn it)"
            ),
        )
        window = {"type": "learned", "terms": 3} if learned else {"type": "hamming"}
        return {"name": "kspace_acquisition", "band": band, "window": window}

    # ---- baselines
    def plan_gaussian(self, scale: int) -> dict:
        sigmas = self.fp.gaussian_fit_sigmas
        curves = [c.pair.gaussian_fit_ssim for c in self.fp.pairs]
        curves = [c for c in curves if not np.any(np.isnan(c))]
        if curves:
            mean = np.mean(np.asarray(curves), axis=0)
            i = int(np.argmax(mean))
            sigma = float(sigmas[i])
            self._decide(
                "gaussian_sigma",
                f"{sigma:g} HR px: best mean SSIM ({mean[i]:.3f}) of blurred, decimated HR to "
                f"real LR over {len(curves)} pairs (paper's choice by similarity: 1.5)",
            )
            return {"name": "gaussian", "sigma": sigma, "fitted": True, "ssim": float(mean[i])}
        self._decide("gaussian_sigma", f"{PAPER_SIGMA} HR px (paper): no pairs to fit it on")
        return {"name": "gaussian", "sigma": PAPER_SIGMA, "fitted": False}

    def plan_zerofill(self, scale: int) -> dict:
        return {
            "name": "zerofill",
            "keep_fraction": [1.0 / scale, 1.0 / scale],
            "fermi_radius": 0.9,
            "fermi_width": 0.05,
        }

    def plan_dsn(self, scale: int) -> dict:
        # deferred (whitelisted in test_architecture): the DSN module loads torch, which
        # mrisr_plan_and_preprocess and its spawned workers do not need otherwise
        from mrisr.degradation.dsn import DEFAULTS as DSN_DEFAULTS

        return {"name": "dsn", **DSN_DEFAULTS}

    # ---- assemble: the configurations, then the plans
    def plan_configurations(self, s: int, edsr: dict, dsgan: dict, noise: dict) -> dict:
        """The configurations: a degradation model, the SR network and its input each."""
        return {
            "dsgan_edsr": {
                "label": "DSGAN+EDSR",
                "description": "EDSR trained on HR degraded by the learned DSGAN kernels "
                "(signed) plus the real LR's Rician noise; applied to the raw real LR",
                "degradation": {
                    **dsgan,
                    "fake_noise": self.plan_fake_noise(),
                    "update": self.plan_dsgan_update(),
                    "synthesis_kernel": "signed",
                    "width_calibration": self.plan_width_calibration(),
                    "kernel_pooling": self.plan_kernel_pooling(),
                    "fallback": "fitted_gaussian",
                },
                "sr": edsr,
                "sr_input": "raw",
                "training_noise": noise,
                "sr_loss": self.plan_sr_loss(),
            },
            "dsgan_paper_edsr": {
                "inherits_from": "dsgan_edsr",
                "label": "DSGAN+EDSR (paper)",
                "description": "the paper's method: EDSR on HR degraded by the post-processed "
                "DSGAN kernels (no noise), applied to NLM-denoised real LR",
                "degradation": {**dsgan, **PAPER_DSGAN},
                "sr_input": "denoised",
                "training_noise": None,
                "sr_loss": {"l1": 1.0},
            },
            "kspace_edsr": {
                "inherits_from": "dsgan_edsr",
                "label": "k-space+EDSR",
                "description": "EDSR trained on HR through the real LR's k-space band and "
                "learned raw-data filter plus its Rician noise; applied to the raw real LR",
                "degradation": self.plan_kspace_acquisition(s),
            },
            "gaussian_edsr": {
                "inherits_from": "dsgan_paper_edsr",
                "label": "GB+EDSR",
                "description": "EDSR trained on Gaussian-blurred, decimated HR (GB+EDSR)",
                "degradation": self.plan_gaussian(s),
            },
            "zerofill_edsr": {
                "inherits_from": "dsgan_paper_edsr",
                "label": "ZF+EDSR",
                "description": "EDSR trained on k-space zero-filled HR (ZF+EDSR)",
                "degradation": self.plan_zerofill(s),
            },
            "dsn_edsr": {
                "inherits_from": "dsgan_paper_edsr",
                "label": "DSN+EDSR",
                "description": "EDSR trained on HR downsampled by a CNN fit to real LR (DSN+EDSR)",
                "degradation": self.plan_dsn(s),
            },
            "bicubic": {
                "label": "Bicubic",
                "description": "bicubic interpolation of real LR (no training)",
                "degradation": None,
                "sr": None,
            },
        }

    def plan_through_plane_only(self, dataset_name: str) -> Plans:
        """Plans of a thick-slice dataset with nothing to do in-plane: the through-plane
        configurations alone (:mod:`mrisr.planning.through_plane_plans`), scale 1."""
        h = float(np.median([np.mean(s.inplane_spacing) for s in self.fp.scans("lr")]))
        self._decide(
            "scale", "x1 in-plane: the LR's in-plane spacing is the HR's; through-plane only"
        )
        data = {
            "plans_name": self.plans_name,
            "planner": type(self).__name__,
            "dataset_name": dataset_name,
            "scale": 1,
            "hr_inplane_spacing": h,
            "lr_working_inplane_spacing": h,
            "real_lr_inplane_spacing": h,
            "through_plane_normal": self.fp.through_plane_normal,
            "preprocessing": {
                "normalization": self.plan_normalization(),
                "denoising": {"method": "none"},
                "register_pairs": False,
            },
            "configurations": plan_through_plane(self.fp, self._decide, self.through_plane_seconds),
            "decisions": dict(self.decisions),
        }
        return Plans(data)

    def plan(self, dataset_name: str) -> Plans:
        if through_plane_only(self.fp):
            return self.plan_through_plane_only(dataset_name)
        self._hr_spacing = h = self.plan_hr_spacing()
        s = self.plan_scale(h)
        kernel_mode = self.plan_kernel_mode()
        edsr = self.plan_edsr(s)
        dsgan = self.plan_dsgan(s, kernel_mode)
        noise = self.plan_training_noise()
        data = {
            "plans_name": self.plans_name,
            "planner": type(self).__name__,
            "dataset_name": dataset_name,
            "scale": s,
            "hr_inplane_spacing": h,
            "lr_working_inplane_spacing": s * h,
            "real_lr_inplane_spacing": self.plan_real_lr_spacing(),
            "through_plane_normal": self.fp.through_plane_normal,
            "preprocessing": {
                "normalization": self.plan_normalization(),
                "denoising": self.plan_denoising(),
                "register_pairs": self.plan_registration(),
                "hr_interpolator": "bspline",
                "lr_interpolator": "bspline",
                "sampling": {"clip_percentile": 97.0, "window": 5},
            },
            "configurations": self.plan_configurations(s, edsr, dsgan, noise),
            "decisions": dict(self.decisions),
        }
        return Plans(data)


@PLANNERS.register
class DemoPlanner(DefaultPlanner):
    """The default plans on a demo budget (``mrisr_demo``; plans ``mrisrDemoPlans``).

    One change: DSGAN kernels per volume instead of per slice when the slices of every
    pair match: one GAN per pair (3000 iterations, crops from all its slices), 15x cheaper
    on the demo's 15-slice scans and lossless there (the demo's LR has the same in-plane
    k-space extent, hence the same kernel, in every slice). The SR budget is a trainer
    variant (``EDSRTrainer_demo``).
    """

    plans_name = "mrisrDemoPlans"

    def plan_kernel_mode(self) -> str:
        mode = super().plan_kernel_mode()
        if mode == "per_slice":
            self._decide(
                "kernel_mode",
                "per_volume (demo budget): one GAN per pair from all its slices; the paper's "
                "per-slice mode costs one GAN per slice",
            )
            return "per_volume"
        return mode
