"""The DSGAN's part of the plans: its two configurations (``dsgan_edsr``, the product's
default, and ``dsgan_paper_edsr``, the paper's) and the decisions behind their section.

Called by :meth:`DSGANDegradation.plan <mrisr.degradation.dsgan.model.DSGANDegradation.plan>`
with the dataset's fingerprint and the planner's :class:`PlanningContext`.
"""

from __future__ import annotations

import copy

from mrisr.degradation.base import PlanningContext
from mrisr.degradation.dsgan.params import DEFAULT_DSGAN_PARAMS
from mrisr.degradation.kernels import KERNEL_SIZE, lr_crop_size

#: the paper's DSGAN: noise-free fakes, one GAN per unit, kernels as learned, per unit
PAPER_DSGAN = {
    "fake_noise": "none",
    "seeds_per_unit": 1,
    "width_calibration": "none",
    "kernel_pooling": "units",
    "update": "alternating",
}
HR_CROP = 64  # largest HR crop (KernelGAN's)
ITERATIONS = 3000  # per GAN (KernelGAN's)
D_FIELD = 7  # receptive field of the patch discriminator
KERNELGAN_RANGE = 2.0  # KernelGAN's thresholds are on a [-1, 1] intensity scale


def plan_dsgan_configurations(fp, ctx: PlanningContext) -> dict[str, dict]:
    """``dsgan_edsr`` (raw input, measured noise in the fakes, calibrated kernels) and
    ``dsgan_paper_edsr`` (the paper's DSGAN, NLM-denoised input)."""
    section = _section(fp, ctx)
    return {
        "dsgan_edsr": ctx.configuration(
            "DSGAN+EDSR",
            "EDSR trained on HR degraded by the learned DSGAN kernels "
            "(signed) plus the real LR's Rician noise; applied to the raw real LR",
            {
                **section,
                "fake_noise": _fake_noise(ctx),
                "update": _update(ctx),
                "synthesis_kernel": "signed",
                "width_calibration": _width_calibration(fp, ctx),
                "kernel_pooling": _kernel_pooling(fp, ctx),
                "fallback": "fitted_gaussian",
            },
            raw_input=True,
        ),
        "dsgan_paper_edsr": ctx.configuration(
            "DSGAN+EDSR (paper)",
            "the paper's method: EDSR on HR degraded by the post-processed "
            "DSGAN kernels (no noise), applied to NLM-denoised real LR",
            {**section, **PAPER_DSGAN},
            raw_input=False,
        ),
    }


def _seeds(mode: str, ctx: PlanningContext) -> int:
    seeds = 1 if mode == "per_slice" else 3
    ctx.decide(
        "dsgan_seeds",
        f"{seeds} GAN(s) per unit"
        + (
            ": one kernel per slice, many units"
            if seeds == 1
            else f" ({mode}: few units), the element-wise median kernel: one GAN's "
            "estimate varies with its seed (bench_dsgan --quality: median-of-3 kernel L1 "
            "error 0.31 of the Gaussian fit's vs 0.38 for single GANs)"
        ),
    )
    return seeds


def _section(fp, ctx: PlanningContext) -> dict:
    """Crops that fit the smallest slices, KernelGAN's schedule on this intensity scale."""
    scale, mode = ctx.scale, ctx.kernel_mode
    min_hr = min(min(s.shape_zyx[1:]) for s in fp.scans("hr"))
    min_lr_work = min(
        int(
            min(s.extent_mm[i] for i in range(3) if i != s.through_plane_axis)
            // (scale * ctx.hr_spacing)
        )
        for s in fp.scans("lr")
    )
    largest = ctx.option("dsgan", "hr_crop", HR_CROP)
    hr_crop = largest
    smallest_hr_crop = KERNEL_SIZE + scale * (D_FIELD - 1)  # D must see >= 7x7 LR pixels
    while hr_crop > smallest_hr_crop and (
        hr_crop > min_hr or lr_crop_size(hr_crop, scale) > min_lr_work
    ):
        hr_crop -= 2
    lr_crop = lr_crop_size(hr_crop, scale)
    why = f"HR crop {hr_crop}, LR crop {lr_crop} = (HR crop - receptive field {KERNEL_SIZE}) // {scale} + 1"
    if hr_crop < largest:
        why += f" (reduced from {largest}: smallest HR slice {min_hr} px, LR {min_lr_work} px)"
    ctx.decide("dsgan_crops", why)
    ref = ctx.intensity_range / KERNELGAN_RANGE
    it = ctx.option("dsgan", "iterations", ITERATIONS)
    ctx.decide(
        "dsgan_schedule",
        f"{it} iterations; bicubic threshold 0.4 x {ref**2:.3g} (MSE on this dataset's "
        f"[0, {ctx.intensity_range:g}] scale vs KernelGAN's [-1, 1]); lr / 10 at 1/4, 1/2, 3/4",
    )
    d = copy.deepcopy(DEFAULT_DSGAN_PARAMS)  # KernelGAN's values; this dataset's below
    d["schedule"]["bicubic_threshold"] = 0.4 * ref**2
    return {
        "name": "dsgan",
        "kernel_mode": mode,
        "seeds_per_unit": _seeds(mode, ctx),
        **d,
        "iterations": it,
        "hr_crop": hr_crop,
        "lr_crop": lr_crop,
        "kernel_size": KERNEL_SIZE,
        "lr_decay_iterations": [it // 4, it // 2, 3 * it // 4],
        "d_input_noise_sd": (1.0 / 255.0) * ref,
    }


def _fake_noise(ctx: PlanningContext) -> str:
    ctx.decide(
        "dsgan_fake_noise",
        "measured: the DSGAN's discriminator judges G(HR) with the real LR's Rician noise "
        "(sigma and colour the SR training adds: the registered pairs' residual, else "
        "the background) against the raw real LR, so "
        "noise is no cue and the kernel width is learned from structure alone; the "
        "paper's configuration keeps noise-free fakes against the NLM-denoised LR",
    )
    return "measured"


def _update(ctx: PlanningContext) -> str:
    ctx.decide(
        "dsgan_update",
        "simultaneous: G and D are updated from one scoring of the real crop and G(HR) "
        "(G's gradient at the fake crop is -2 x D's), instead of KernelGAN's G step "
        "followed by a D step on the updated G(HR): 20% less time per iteration "
        "(bench_dsgan.py) with the same kernel recovery (--quality); the paper's "
        "configuration alternates",
    )
    return "simultaneous"


def _width_calibration(fp, ctx: PlanningContext) -> str:
    if not fp.pairs:
        ctx.decide(
            "dsgan_width_calibration",
            "none: no registered pairs; the kernels' widths are the GANs' own",
        )
        return "none"
    ctx.decide(
        "dsgan_width_calibration",
        "registered_pairs: the learned kernels are stretched per in-plane axis (0.70-1.43) "
        "to match the registered real LR of the training pairs best (SSIM), the "
        "criterion of the fitted Gaussian's width; the GANs' shape is kept, their width "
        "varies with the content they saw (harness: median kernel -16% / +18% on one "
        "axis of the two demo protocols)",
    )
    return "registered_pairs"


def _kernel_pooling(fp, ctx: PlanningContext) -> str:
    if not fp.pairs:
        ctx.decide("dsgan_kernel_pooling", "units: no registered pairs to decide by")
        return "units"
    ctx.decide(
        "dsgan_kernel_pooling",
        "fidelity: every case keeps its own kernel, or all share the pooled kernel, "
        "whichever makes synthetic LR closer to the registered real LR (SSIM): one GAN's "
        "estimate carries the noise of its seed and content, real differences between "
        "the cases' acquisitions keep their own (harness: pooled on both demo protocols)",
    )
    return "fidelity"
