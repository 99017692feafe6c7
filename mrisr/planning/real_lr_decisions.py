"""The planner's decisions about what a real LR scan adds beyond the PSF: its noise in
the SR training patches and in the DSGAN's fakes, and the SR loss that keeps texture."""

from __future__ import annotations

#: the paper's DSGAN: noise-free fakes, one GAN per unit, kernels as learned, per unit
PAPER_DSGAN = {
    "fake_noise": "none",
    "seeds_per_unit": 1,
    "width_calibration": "none",
    "kernel_pooling": "units",
    "update": "alternating",
}


class RealLRDecisions:
    """Mixin of :class:`~mrisr.planning.planners.DefaultPlanner` (``self.fp`` is the
    fingerprint, ``self._decide`` records a decision)."""

    def plan_training_noise(self) -> dict:
        sig = [s.noise_sigma_background for s in self.fp.scans("lr") if s.noise_sigma_background]
        self._decide(
            "training_noise",
            "Rician noise on every training LR patch at the level and colour measured on the "
            f"real LR's background ({len(sig)} of {len(self.fp.scans('lr'))} LR scans have one; "
            "measured again on the working grid by preprocessing), sigma log-uniform within "
            "+-30%, PSF width +-10%, smooth bias 0.1: robust to estimation error; the network "
            "sees the raw (not NLM-denoised) real LR and learns to denoise",
        )
        return {"model": "rician", "sigma_jitter": 0.3, "kernel_width_jitter": 0.1, "bias": 0.1}

    def plan_fake_noise(self) -> str:
        self._decide(
            "dsgan_fake_noise",
            "measured: the DSGAN's discriminator judges G(HR) with the real LR's Rician noise "
            "(sigma and colour measured on the working grid) against the raw real LR, so "
            "noise is no cue and the kernel width is learned from structure alone; the "
            "paper's configuration keeps noise-free fakes against the NLM-denoised LR",
        )
        return "measured"

    def plan_dsgan_update(self) -> str:
        self._decide(
            "dsgan_update",
            "simultaneous: G and D are updated from one scoring of the real crop and G(HR) "
            "(G's gradient at the fake crop is -2 x D's), instead of KernelGAN's G step "
            "followed by a D step on the updated G(HR): 20% less time per iteration "
            "(bench_dsgan.py) with the same kernel recovery (--quality); the paper's "
            "configuration alternates",
        )
        return "simultaneous"

    def plan_width_calibration(self) -> str:
        if not self.fp.pairs:
            self._decide(
                "dsgan_width_calibration",
                "none: no registered pairs; the kernels' widths are the GANs' own",
            )
            return "none"
        self._decide(
            "dsgan_width_calibration",
            "registered_pairs: the learned kernels are stretched per in-plane axis (0.70-1.43) "
            "to match the registered real LR of the training pairs best (SSIM), the "
            "criterion of the fitted Gaussian's width; the GANs' shape is kept, their width "
            "varies with the content they saw (harness: median kernel -16% / +18% on one "
            "axis of the two demo protocols)",
        )
        return "registered_pairs"

    def plan_kernel_pooling(self) -> str:
        if not self.fp.pairs:
            self._decide("dsgan_kernel_pooling", "units: no registered pairs to decide by")
            return "units"
        self._decide(
            "dsgan_kernel_pooling",
            "fidelity: every case keeps its own kernel, or all share the pooled kernel, "
            "whichever makes synthetic LR closer to the registered real LR (SSIM): one GAN's "
            "estimate carries the noise of its seed and content, real differences between "
            "the cases' acquisitions keep their own (harness: pooled on both demo protocols)",
        )
        return "fidelity"

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
