"""Planners: from a dataset fingerprint to plans.json.

A planner decides what every configuration shares (geometry, scale, intensities,
denoising, registration, the SR network, the raw-input training noise and loss), then asks
every registered degradation model for its configurations
(:meth:`~mrisr.degradation.base.Degradation.plan`), and adds the interpolation baseline.
Each decision is recorded with its reason (``plans["decisions"]``), which
``mrisr_plan_and_preprocess`` prints. New planners subclass :class:`DefaultPlanner`,
override one decision, and are declared in the ``mrisr.planners`` entry-point group.
"""

from __future__ import annotations

import copy

import numpy as np

from mrisr.degradation.base import PlanningContext, degradation_models
from mrisr.planning.fingerprint import DatasetFingerprint, integer_scale
from mrisr.planning.through_plane_plans import SECONDS as THROUGH_PLANE_SECONDS
from mrisr.planning.through_plane_plans import plan_through_plane, through_plane_only
from mrisr.plans import BASELINE_CONFIGURATION, DEFAULT_PLANS, INITIALISATIONS, Plans
from mrisr.utilities.registry import Registry

PLANNERS: Registry[type] = Registry("planner", "mrisr.planners")

#: the baseline every in-plane plan compares against: interpolation of the real LR
BASELINE = {
    BASELINE_CONFIGURATION: {
        "label": "Bicubic",
        "description": "bicubic interpolation of real LR (no training)",
        "degradation": None,
        "sr": None,
    }
}


@PLANNERS.register
class DefaultPlanner:
    """The planner of the paper's method, adapted to each dataset by its fingerprint."""

    plans_name = DEFAULT_PLANS
    edsr_lr_patch = 48
    #: degradation model name -> overrides of its planning defaults (``PlanningContext.option``)
    model_options: dict[str, dict] = {}
    #: degradation models this planner leaves out of the plans
    left_out_models: tuple[str, ...] = ()
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

    def plan_acquired_resolution(self) -> list[float] | None:
        """Median acquired in-plane spacing of the LR scans (SimpleITK order), read from
        their spectra (:mod:`mrisr.imageio.spectrum_band`); None where none was read."""
        read = [s for s in self.fp.scans("lr") if s.acquired_band is not None]
        if not read:
            return None
        stored = np.median([s.inplane_spacing for s in read], axis=0)
        acquired = np.median([s.acquired_spacing for s in read], axis=0)
        band = np.median([s.acquired_band for s in read], axis=0)
        n = sum(min(s.acquired_band) < 1.0 for s in read)
        if n == 0:
            self._decide(
                "acquired_resolution",
                f"{stored[0]:.3g} x {stored[1]:.3g} mm, as the headers state: no LR scan's "
                f"tissue spectrum ends short of its stored grid's Nyquist ({len(read)} read)",
            )
        else:
            self._decide(
                "acquired_resolution",
                f"{acquired[0]:.3g} x {acquired[1]:.3g} mm, coarser than the headers' "
                f"{stored[0]:.3g} x {stored[1]:.3g} mm: the tissue spectra of {n} of "
                f"{len(read)} LR scans end at {band[0]:.2f} x {band[1]:.2f} of the stored "
                "grid's Nyquist (stored finer than acquired, reduced phase resolution or a "
                "steep raw-data filter); the k-space band follows it where there are no pairs "
                "to measure it on",
            )
        return [round(float(a), 4) for a in acquired]

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

    # ---- what the configurations that see the raw real LR share
    def plan_training_noise(self) -> dict:
        sig = [s.noise_sigma_background for s in self.fp.scans("lr") if s.noise_sigma_background]
        self._decide(
            "training_noise",
            "Rician noise on every training LR patch at the real LR's level: measured against "
            "the registered HR of each pair (the lowest of the pairs' residual estimates: the "
            "model's errors only add), else on the background "
            f"({len(sig)} of {len(self.fp.scans('lr'))} LR scans have one) or inside the tissue; "
            "the colour from the background; measured again on the working grid by "
            "preprocessing; sigma log-uniform within "
            "+-30%, PSF width +-10%, smooth bias 0.1: robust to estimation error; the network "
            "sees the raw (not NLM-denoised) real LR and learns to denoise",
        )
        return {"model": "rician", "sigma_jitter": 0.3, "kernel_width_jitter": 0.1, "bias": 0.1}

    def plan_sr_loss(self) -> dict:
        self._decide(
            "sr_loss",
            "L1 + 0.5 x the L1 distance of the patches' Fourier amplitudes (orthonormal FFT) "
            "for the configurations that see the raw LR: L1 alone returns the smooth median of "
            "the noisy targets; the amplitude term asks for the HR's energy at every spatial "
            "frequency (quality harness, default protocol: BRISQUE 41 vs 62 with L1, PSNR "
            "unchanged); the paper's configurations keep L1",
        )
        return {"l1": 1.0, "fourier_amplitude": 0.5}

    def plan_initialisation(self) -> str:
        """Fine-tune the generic network shipped with mrisr (issue of time to a good
        model): 300 iterations from it beat 1200 from scratch on both demo protocols
        (benchmarks/bench_warm_start.py). Only where one of the trained network's size is
        shipped; ``mrisr_plan_and_preprocess --from-scratch`` opts out."""
        self._decide(
            "initialisation",
            "generic: each SR training fine-tunes the generic network shipped with mrisr "
            "where one of its size exists (EDSR 8 x 32, for x2 and x3; trained on the demo's "
            "protocol family), else starts from scratch; --from-scratch opts out",
        )
        return INITIALISATIONS[0]

    # ---- the configurations: every registered degradation model's, then the baseline
    def plan_configurations(self, context: PlanningContext) -> dict:
        """name -> configuration: what each registered model contributes (in plan order),
        then interpolation of the real LR."""
        configurations: dict = {}
        for model in degradation_models():
            if model.name in self.left_out_models:
                continue
            for name, config in model.plan(self.fp, context).items():
                if name in configurations or name in BASELINE:
                    raise ValueError(
                        f"configuration '{name}' is planned twice (degradation '{model.name}')"
                    )
                configurations[name] = config
        return {**configurations, **copy.deepcopy(BASELINE)}

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
        context = PlanningContext(
            scale=s,
            hr_spacing=h,
            sr=self.plan_edsr(s),
            kernel_mode=self.plan_kernel_mode(),
            training_noise=self.plan_training_noise(),
            sr_loss=self.plan_sr_loss(),
            intensity_range=self.intensity_range,
            decide=self._decide,
            options=self.model_options,
        )
        initialisation = self.plan_initialisation()
        data = {
            "plans_name": self.plans_name,
            "planner": type(self).__name__,
            "dataset_name": dataset_name,
            "scale": s,
            "hr_inplane_spacing": h,
            "lr_working_inplane_spacing": s * h,
            "real_lr_inplane_spacing": self.plan_real_lr_spacing(),
            "real_lr_acquired_inplane_spacing": self.plan_acquired_resolution(),
            "through_plane_normal": self.fp.through_plane_normal,
            "preprocessing": {
                "normalization": self.plan_normalization(),
                "denoising": self.plan_denoising(),
                "register_pairs": self.plan_registration(),
                "hr_interpolator": "bspline",
                "lr_interpolator": "bspline",
                "sampling": {"clip_percentile": 97.0, "window": 5},
            },
            "configurations": self.plan_configurations(context),
            "initialisation": initialisation,
            "decisions": dict(self.decisions),
        }
        return Plans(data)


@PLANNERS.register
class DemoPlanner(DefaultPlanner):
    """The default plans on a demo budget (``mrisr_demo``; plans ``mrisrDemoPlans``).

    Two changes: DSGAN kernels per volume instead of per slice when the slices of every
    pair match: one GAN per pair (3000 iterations, crops from all its slices), 15x cheaper
    on the demo's 15-slice scans and lossless there (the demo's LR has the same in-plane
    k-space extent, hence the same kernel, in every slice); and no DSN configuration. The
    SR budget is a trainer variant (``EDSRTrainer_demo``).
    """

    plans_name = "mrisrDemoPlans"
    #: the DSN's fit and training would take the demo past 15 minutes on 2 CPU cores without
    #: AMX; the quality harness plans it (benchmarks/bench_quality.py)
    left_out_models = ("dsn",)

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
