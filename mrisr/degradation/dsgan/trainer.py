"""Batched trainer of the downsampling GAN (DSGAN; KernelGAN with the paper's edge maps).

The paper trains one GAN per axial slice (1728 GANs x 3000 iterations). This module
trains many independent *units* (a slice, a volume or a dataset, depending on the kernel
mode chosen by the planner) at once, as one batched model, without changing the
arithmetic of any unit:

* **G is evaluated collapsed.** The deep linear generator is exactly one 13x13 strided
  correlation whose kernel is a cheap, differentiable function of the deep weights
  (:func:`mrisr.networks.linear_generator.compose_kernel`). The deep weights stay the
  trainable parameters (the implicit regulariser); only the evaluation is collapsed, and
  the gradients are the exact gradients of the deep network.
* **Independent units.** Parameters are stacked with a leading unit dimension; N kernels,
  N generators and N discriminators are evaluated with batched matrix products and
  grouped convolutions (:class:`StackedPatchDiscriminator`: per-unit spectral norm and
  BatchNorm). The total loss is the *sum* of the unit losses, so every unit receives its
  own gradient; Adam is element-wise, so Adam on the stacked parameters is per-unit Adam.
  Regulariser weights follow KernelGAN's schedule per unit. Every unit has its own RNG
  streams (crops, D input noise, initialisation), derived from its seed only. No
  operation mixes units: changing the other units of a batch leaves a unit's result
  bit-identical. Changing the batch *size* (or D's precision and chunks, chosen by
  :mod:`~mrisr.degradation.dsgan.discriminator_precision`) changes the summation order; GAN training
  amplifies such rounding: alone and in a batch, a unit agrees to ~1e-4 after one
  iteration and is an equally valid, different draw after a few hundred.
* **Per iteration and unit** (batch size 1, as in the paper): one slice of the unit, one
  ``hr_crop`` HR crop and, independently, one ``lr_crop`` real-LR crop, both with
  gradient-weighted centres (:mod:`mrisr.preprocessing.sampling`), drawn up front.
* **Failures are per unit.** A unit without usable slices is returned as ``"skipped"``; a
  unit whose loss becomes NaN/inf is masked out of the batch (zero loss weight) and
  returned as ``"nan"``; the other units are unaffected (no operation mixes units).

Deviations from KernelGAN's reference loop, all documented where they happen: the
spectral-norm power iteration runs once per D evaluation *step* (G step, D step) instead
of once per forward call (the D step scores the real and the generated crop with the same
normalised weights); the Sobel maps are folded into D's first layer (same linear map);
the bias of D's 1x1 convs before BatchNorm is dropped (cancelled exactly by BatchNorm);
``|k|^0.2`` is evaluated as ``(k^2 + 1e-20)^0.1`` so that its gradient is finite at 0;
with ``"update": "simultaneous"`` (planned for ``dsgan_edsr``) G and D are updated from
one scoring of the same G(HR), which the alternating update (KernelGAN's) scores twice;
HR crop corners are not rounded to even positions (KernelGAN aligns them with its
downscaled copy of the *same* image; here HR and LR are different acquisitions).

Regularisers (KernelGAN ``loss.py``; the ``lambdas`` weight them): ``bicubic`` = MSE
between G(x) and x downscaled by the fixed MATLAB-bicubic kernel (aligned with G's
output grid); ``sum2one`` = ``|1 - sum k|``; ``boundaries`` = mean of ``|k * m|`` with
KernelGAN's penalty mask ``m``; ``center`` = MSE between k's centre of mass and
:func:`mrisr.degradation.kernels.wanted_center`; ``sparse`` = mean ``|k|^0.2``. KernelGAN
averages (``nn.L1Loss``/``nn.MSELoss``) where the paper's eq. 3 writes sums; the lambdas
were tuned for the averages, which is what is implemented.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mrisr.degradation.dsgan import discriminator_precision
from mrisr.degradation.dsgan.fake_noise import FakeNoise
from mrisr.degradation.dsgan.losses import LambdaSchedule, Regularisers
from mrisr.degradation.dsgan.params import REGULARISERS
from mrisr.degradation.dsgan.units import CropGatherer, DSGANResult, UnitPlan
from mrisr.degradation.kernel_analysis import post_process_kernel
from mrisr.networks.linear_generator import apply_kernels, compose_kernel, init_generator_weights
from mrisr.networks.patch_discriminator import StackedPatchDiscriminator
from mrisr.utilities.threads import ThreadTuner

logger = logging.getLogger(__name__)

_NOISE_BLOCK = 100  # iterations of D-input noise generated at once
_STAT_NAMES = ("g_adv", "d_real", "d_fake", "d", *REGULARISERS)


# --------------------------------------------------------------------------- training


class BatchTrainer:
    """N units trained together: stacked G weights, stacked D, two Adams, per-unit schedule.

    ``step(it)`` runs one training iteration of every unit (G step, then D step, or with
    ``"update": "simultaneous"`` both from one scoring; then the schedule);
    :meth:`results` collapses and post-processes the kernels. Public so that the
    benchmark can time steady-state steps.
    """

    def __init__(
        self,
        plans: list[UnitPlan],
        names: list[str],
        scale: int,
        p: dict,
        device: torch.device,
    ) -> None:
        self.n = n = len(plans)
        self.names, self.scale, self.p, self.device = names, scale, p, device
        self.iterations = int(p["iterations"])
        self.hr_crop, self.lr_crop, self.ksize = p["hr_crop"], p["lr_crop"], p["kernel_size"]
        gens = [torch.Generator().manual_seed(pl.torch_seed) for pl in plans]
        self.g_weights = [
            torch.nn.Parameter(w.to(device))
            for w in init_generator_weights(gens, channels=p["g_channels"])
        ]
        self.disc = StackedPatchDiscriminator(gens, channels=p["d_channels"]).to(device)
        self.precision, self.chunk = discriminator_precision.choose(
            p["precision"], n, p["d_channels"], self.lr_crop, device
        )
        self.disc.compute_dtype = discriminator_precision.DTYPES[self.precision]
        betas = tuple(p["betas"])
        # Adam is element-wise: on stacked parameters it is exactly per-unit Adam.
        fused: dict[str, Any] = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.opt_g = torch.optim.Adam(self.g_weights, lr=p["g_lr"], betas=betas, **fused)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=p["d_lr"], betas=betas, **fused)
        self.regs = Regularisers(scale, self.ksize, self.hr_crop).to(device)
        self.sched = LambdaSchedule(n, p["lambdas"], p["schedule"])
        self.lam_t = torch.from_numpy(self.sched.lam.copy()).to(device)
        self.hr_gather = CropGatherer(
            [pl.hr_slices for pl in plans], [pl.hr_pos for pl in plans], self.hr_crop, device
        )
        self.lr_gather = CropGatherer(
            [pl.lr_slices for pl in plans], [pl.lr_pos for pl in plans], self.lr_crop, device
        )
        self.noise_rngs = [pl.noise_rng for pl in plans]
        self.noise_sd = float(p["d_input_noise_sd"])
        self.noise: torch.Tensor | None = None
        self.fake_noise = None  # "measured": the real LR's noise on G(HR) (fake_noise.py)
        if p["fake_noise"] == "measured":
            self.fake_noise = FakeNoise(
                [pl.noise_sigma for pl in plans],
                [pl.noise_rho for pl in plans],
                self.lr_crop,
                device,
            )
        self.rician: torch.Tensor | None = None
        self.decay_at = {int(i) for i in p["lr_decay_iterations"]}
        self.alive_np = np.ones(n, dtype=bool)
        self.alive = torch.ones(n, dtype=torch.bool, device=device)
        self.died: dict[int, str] = {}
        self.last = np.zeros((n, 9), dtype=np.float64)

    def _noise_block(self, it: int) -> None:
        block = min(_NOISE_BLOCK, self.iterations - it)
        shape = (block, self.lr_crop, self.lr_crop)
        arr = np.stack(
            [r.standard_normal(shape, dtype=np.float32) for r in self.noise_rngs], axis=1
        )
        self.noise = torch.from_numpy(arr).mul_(self.noise_sd).to(self.device)
        if self.fake_noise is not None:
            self.rician = self.fake_noise.block(block, self.noise_rngs)

    def run(self, progress: bool = False, desc: str = "DSGAN", on_step=None) -> None:
        """All iterations (stopping early when every unit diverged), with the thread count
        kept at the faster one by :class:`~mrisr.utilities.threads.ThreadTuner` on CPU;
        ``on_step(seconds)`` after each iteration."""
        tuner = ThreadTuner(torch.get_num_threads()) if self.device.type == "cpu" else None
        for it in tqdm(
            range(self.iterations), desc=desc, disable=not progress, leave=False, mininterval=1.0
        ):
            t0 = time.perf_counter()
            if not self.step(it):
                logger.warning("all units of %s diverged; stopping early", desc)
                break
            dt = time.perf_counter() - t0
            if tuner is not None:
                tuner.step_done(dt)
            if on_step is not None:
                on_step(dt)

    def step(self, it: int) -> bool:
        """One iteration of every unit. Returns False once every unit has diverged."""
        if it % _NOISE_BLOCK == 0 or self.noise is None:
            self._noise_block(it)
        x_hr = self.hr_gather(it)[:, None]  # (N, 1, hr_crop, hr_crop)
        y_lr = self.lr_gather(it)  # (N, lr_crop, lr_crop)
        # D's spectral-normalised weights (one power iteration): D does not change
        # before its own update, so the G step uses them frozen and the D step with grad.
        dw_d = self.disc.normalized_weights(1)
        rn = None if self.rician is None else self.rician[it % _NOISE_BLOCK]  # (N, 4, h, w)
        if self.p["update"] == "simultaneous":
            stats, ok = self._joint_step(x_hr, y_lr, dw_d, rn, it)
            return self._bookkeeping(it, stats, ok)
        adv, terms, ok_g = self._g_step(x_hr, {key: v.detach() for key, v in dw_d.items()}, rn)
        d_stats = self._d_step(x_hr, y_lr, dw_d, ok_g, it)
        stats = torch.cat([adv[:, None], d_stats[:, :3], terms.detach()], 1)
        return self._bookkeeping(it, stats, d_stats[:, 3] > 0)

    def _g_forward(self, x_hr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """G(HR) ``(N, 1, lr_crop, lr_crop)``, the regularisers (unweighted, per unit)
        and their weighted sum, differentiable w.r.t. G's weights."""
        with torch.no_grad():
            target = self.regs.bicubic_target(x_hr)
        k = compose_kernel(self.g_weights)
        g_out = apply_kernels(x_hr, k, self.scale)
        bic = (g_out - target).pow(2).mean(dim=(1, 2, 3))
        terms = torch.stack([bic, *self.regs.kernel_terms(k)], dim=1)
        return g_out, terms, (terms * self.lam_t).sum(dim=1)

    def _joint_step(self, x_hr, y_lr, dw_d: dict, rn, it: int) -> tuple[torch.Tensor, ...]:
        """``"update": "simultaneous"``: G and D updated from one scoring of the real crop
        and G(HR) + noise. D's loss is ``(1 - D(real) + D(fake)) / 2`` and G's adversarial
        loss ``1 - D(fake)``, so G's gradient at the fake crop is -2 times D's: one forward
        and backward pass serves both (the alternating update scores the fake twice)."""
        g_out, terms, reg = self._g_forward(x_hr)
        reg_d = reg.detach()
        seen = g_out if rn is None else FakeNoise.rician(g_out, rn[:, 2:])
        fake = seen[:, 0] + self.noise[it % _NOISE_BLOCK]

        def joint(scores: torch.Tensor, u: slice):
            d_real = (1.0 - scores[:, 0]).mean(dim=(1, 2))
            d_fake = scores[:, 1].mean(dim=(1, 2))
            loss = 0.5 * (d_real + d_fake)
            ok = self.alive[u] & torch.isfinite(loss + reg_d[u])
            st = torch.stack([1.0 - d_fake, d_real, d_fake, loss, ok.to(loss.dtype)], 1)
            return torch.where(ok, loss, torch.zeros_like(loss)).sum(), st.detach()

        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        crops = torch.stack([y_lr, fake], dim=1)  # (N, 2, h, w)
        st, g_crops = self.disc.backward_in_chunks(crops, dw_d, joint, self.chunk, grad_from=1)
        ok = st[:, 4] > 0
        reg_loss = torch.where(ok, reg, torch.zeros_like(reg)).sum()
        torch.autograd.backward([fake, reg_loss], [g_crops[:, 1].mul(-2.0), None])
        self.opt_g.step()
        self.opt_d.step()
        return torch.cat([st[:, :4], terms.detach()], 1), ok

    def _g_step(self, x_hr: torch.Tensor, dw: dict, rn) -> tuple[torch.Tensor, ...]:
        """Adversarial loss + regularisers, D frozen; D is scored and backpropagated in
        chunks of units, then G's graph once. Returns (adv, terms, ok) per unit."""
        g_out, terms, reg = self._g_forward(x_hr)
        reg_d = reg.detach()

        def adversarial(scores: torch.Tensor, u: slice):
            adv = (1.0 - scores).mean(dim=(1, 2, 3))
            ok = self.alive[u] & torch.isfinite(adv + reg_d[u])
            return torch.where(ok, adv, torch.zeros_like(adv)).sum(), adv.detach()

        seen = g_out if rn is None else FakeNoise.rician(g_out, rn[:, :2])
        adv, g_grad = self.disc.backward_in_chunks(seen, dw, adversarial, self.chunk)
        ok_g = self.alive & torch.isfinite(adv + reg_d)
        self.opt_g.zero_grad(set_to_none=True)
        reg_loss = torch.where(ok_g, reg, torch.zeros_like(reg)).sum()
        torch.autograd.backward([seen, reg_loss], [g_grad, None])
        self.opt_g.step()
        return adv, terms, ok_g

    def _d_step(self, x_hr, y_lr, dw_d: dict, ok_g: torch.Tensor, it: int) -> torch.Tensor:
        """Real LR vs G(HR) + noise, each crop its own BatchNorm batch, both scored with
        the same spectral-normalised weights. Returns (d_real, d_fake, d, ok) per unit."""
        with torch.no_grad():
            fake = apply_kernels(x_hr, compose_kernel(self.g_weights), self.scale)
            if self.rician is not None:
                fake = FakeNoise.rician(fake, self.rician[it % _NOISE_BLOCK][:, 2:])
            fake = fake[:, 0] + self.noise[it % _NOISE_BLOCK]

        def discriminator(scores: torch.Tensor, u: slice):
            d_real = (1.0 - scores[:, 0]).mean(dim=(1, 2))
            d_fake = scores[:, 1].mean(dim=(1, 2))
            loss = 0.5 * (d_real + d_fake)
            ok = ok_g[u] & torch.isfinite(loss)
            st = torch.stack([d_real, d_fake, loss, ok.to(loss.dtype)], 1).detach()
            return torch.where(ok, loss, torch.zeros_like(loss)).sum(), st

        self.opt_d.zero_grad(set_to_none=True)
        crops = torch.stack([y_lr, fake], dim=1)  # (N, 2, h, w)
        stats, _ = self.disc.backward_in_chunks(crops, dw_d, discriminator, self.chunk)
        self.opt_d.step()
        return stats

    def _bookkeeping(self, it: int, stats: torch.Tensor, ok: torch.Tensor) -> bool:
        """Divergence, last losses, the lambda schedule and the learning-rate decay (one
        host transfer per iteration)."""
        stats_np = stats.cpu().numpy().astype(np.float64)
        ok_np = ok.cpu().numpy()
        for i in np.flatnonzero(self.alive_np & ~ok_np):
            bad = [nm for nm, v in zip(_STAT_NAMES, stats_np[i]) if not np.isfinite(v)]
            self.died[int(i)] = (
                f"training diverged at iteration {it}: non-finite "
                f"{', '.join(bad) or 'loss'}; unit stopped, other units unaffected"
            )
            logger.warning("DSGAN unit %s: %s", self.names[i], self.died[int(i)])
        self.alive_np &= ok_np
        self.alive = torch.from_numpy(self.alive_np.copy()).to(self.device)
        self.last[self.alive_np] = stats_np[self.alive_np]
        if not self.alive_np.any():
            return False
        self.sched.update(it, stats_np[:, 4])
        self.lam_t.copy_(torch.from_numpy(self.sched.lam))
        if it in self.decay_at and it > 0:
            for opt in (self.opt_g, self.opt_d):
                for group in opt.param_groups:
                    group["lr"] /= float(self.p["lr_decay_factor"])
        return True

    def results(self) -> list[DSGANResult]:
        """Collapse, check and post-process the kernels of every unit."""
        with torch.no_grad():
            k_final = compose_kernel(self.g_weights).cpu().numpy().astype(np.float32)
        sched, out = self.sched, []
        for i, name in enumerate(self.names):
            losses: dict[str, Any] = {nm: float(v) for nm, v in zip(_STAT_NAMES, self.last[i])}
            losses.update(
                {f"lambda_{r}": float(sched.lam[i, j]) for j, r in enumerate(REGULARISERS)}
            )
            at = int(sched.similar_at[i])
            losses["similar_to_bicubic_at"] = at if at >= 0 else None
            if i in self.died:
                out.append(DSGANResult(name, None, None, losses, "nan", self.died[i]))
                continue
            raw = k_final[i]
            if not np.isfinite(raw).all():
                out.append(DSGANResult(name, None, None, losses, "nan", "final kernel not finite"))
                continue
            try:
                post = post_process_kernel(raw, self.scale, **self.p["postprocess"])
            except ValueError as e:
                out.append(DSGANResult(name, raw, None, losses, "failed", str(e)))
                continue
            out.append(DSGANResult(name, raw, post, losses, "ok", ""))
        return out
