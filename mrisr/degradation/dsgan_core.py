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
  bit-identical. Changing the batch *size* changes the float32 summation order inside
  the batched kernels; GAN training amplifies such rounding-level differences (Adam's
  first steps move weights by +-lr according to gradient signs), so a unit trained alone
  and in a batch agree to ~1e-4 after one iteration and are equally valid, different
  draws after a few hundred.
* **Per iteration and unit** (batch size 1, as in the paper): one slice location of the
  unit, one ``hr_crop`` HR crop and, independently, one ``lr_crop`` real-LR crop, both
  with gradient-weighted centres (:mod:`mrisr.preprocessing.sampling`). All crop
  positions are drawn up front with numpy and gathered with one indexing op per
  iteration.
* **Failures are per unit.** A unit without usable slices is returned as ``"skipped"``; a
  unit whose loss becomes NaN/inf is masked out of the batch (zero loss weight) and
  returned as ``"nan"``; the other units are unaffected (no operation mixes units).

Deviations from KernelGAN's reference loop, all documented where they happen: the
spectral-norm power iteration runs once per D evaluation *step* (G step, D step) instead
of once per forward call (the D step scores the real and the generated crop with the same
normalised weights); the Sobel maps are folded into D's first layer (same linear map);
the bias of D's 1x1 convs before BatchNorm is dropped (cancelled exactly by BatchNorm);
``|k|^0.2`` is evaluated as ``(k^2 + 1e-20)^0.1`` so that its gradient is finite at 0;
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

import copy
import ctypes
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mrisr.degradation.kernels import (
    bicubic_kernel_1d,
    boundary_penalty_mask,
    post_process_kernel,
    wanted_center,
)
from mrisr.networks.linear_generator import (
    G_STRUCTURE,
    apply_kernels,
    compose_kernel,
    init_generator_weights,
    receptive_field,
)
from mrisr.networks.patch_discriminator import StackedPatchDiscriminator
from mrisr.preprocessing.sampling import (
    crop_center_probabilities,
    gradient_weight_map,
    sample_crop_corners,
)
from mrisr.utilities.threads import ThreadTuner, set_compute_threads

logger = logging.getLogger(__name__)

#: The "dsgan" section of the plans (KernelGAN / paper values, intensities in [0, 1]).
DEFAULT_DSGAN_PARAMS: dict[str, Any] = {
    "iterations": 3000,
    "hr_crop": 64,
    "lr_crop": 26,
    "kernel_size": 13,
    "g_channels": 64,
    "d_channels": 64,
    "g_lr": 2e-4,
    "d_lr": 2e-4,
    "betas": [0.5, 0.999],
    "lr_decay_iterations": [750, 1500, 2250],
    "lr_decay_factor": 10.0,
    "d_input_noise_sd": 0.00196,
    "lambdas": {"bicubic": 5.0, "sum2one": 0.5, "boundaries": 0.5, "center": 0.0, "sparse": 0.0},
    "schedule": {
        "bicubic_threshold": 0.1,
        "threshold_patience": 10,
        "decay_every": 200,
        "decay_factor": 100.0,
        "bicubic_min": 5e-6,
        "switch_below": 5e-3,
        "center_end": 1.0,
        "sparse_end": 5.0,
    },
    "sampling": {"clip_percentile": 97.0, "window": 5},
    "postprocess": {"n_largest": 41, "threshold_fraction": 0.75},
}

#: Default number of units trained together. On 2 CPU cores (``bench_dsgan.py --sweep``)
#: the time per unit-iteration still falls from 36 (2.31 ms) to 72 units (2.14 ms);
#: memory is ~20 MB per unit.
DEFAULT_UNITS_PER_BATCH = 72
#: Regulariser names in the order of the per-unit lambda columns.
REGULARISERS = ("bicubic", "sum2one", "boundaries", "center", "sparse")
_NOISE_BLOCK = 100  # iterations of D-input noise generated at once
_STAT_NAMES = ("g_adv", "d_real", "d_fake", "d", *REGULARISERS)


@dataclass
class DSGANUnit:
    """One training unit: a slice, a volume or a whole dataset, depending on kernel mode.

    ``hr``: ``(n_hr_slices, H, W)`` float32 normalised HR in-plane slices; ``lr``:
    ``(n_lr_slices, h, w)`` normalised, denoised real LR slices (2D arrays are one slice).
    HR and LR need not be registered. ``paired_slices``: whether slice ``i`` of ``hr`` and
    of ``lr`` are the same location; if so each iteration picks one location and crops
    both from it (the paper's pairing), otherwise the HR and LR slices are picked
    independently. ``None`` (default) pairs them when both stacks have the same number of
    slices. Crops within the slices are always independent. Slices must be at least
    ``hr_crop`` (HR) and
    ``lr_crop`` (LR) pixels wide, finite and not constant to be used.
    ``hr_weight``/``lr_weight``: gradient weight maps (:func:`gradient_weight_map`) of the
    same shapes, computed (only for the slices used) when None.
    """

    name: str
    hr: np.ndarray
    lr: np.ndarray
    seed: int
    hr_weight: np.ndarray | None = None
    lr_weight: np.ndarray | None = None
    paired_slices: bool | None = None


@dataclass
class DSGANResult:
    """Outcome of one unit.

    ``kernel_raw``: the collapsed 13x13 generator kernel (correlation convention, see
    :mod:`mrisr.degradation.kernels`); ``kernel``: post-processed (sum 1, non-negative,
    centred for the decimation phase, ``13 + 2*pad`` wide). ``kernel`` is None unless
    ``status == "ok"``; ``kernel_raw`` is None for "skipped" and "nan". ``status``: ``"ok"``, ``"skipped"`` (no usable data), ``"nan"``
    (training diverged) or ``"failed"`` (post-processing found no positive kernel values).
    ``losses``: final losses and lambdas (see :func:`train_dsgan`).
    """

    name: str
    kernel_raw: np.ndarray | None
    kernel: np.ndarray | None
    losses: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    message: str = ""


# --------------------------------------------------------------------------- parameters
def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_params(params: dict | None, scale: int) -> dict:
    """Fill missing keys of a plans "dsgan" section with the defaults and validate it."""
    p = _merge(DEFAULT_DSGAN_PARAMS, params or {})
    unknown = set(p) - set(DEFAULT_DSGAN_PARAMS)
    if unknown:
        raise ValueError(f"unknown dsgan parameters: {sorted(unknown)}")
    s = int(scale)
    if s != scale or s < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    k = receptive_field(G_STRUCTURE)
    if p["kernel_size"] != k:
        raise ValueError(f"kernel_size {p['kernel_size']} != generator receptive field {k}")
    expected = (p["hr_crop"] - k) // s + 1
    if p["lr_crop"] != expected:
        raise ValueError(
            f"lr_crop {p['lr_crop']} must equal the generator output size "
            f"(hr_crop - kernel_size)//scale + 1 = {expected}"
        )
    if p["lr_crop"] < 8:
        raise ValueError(f"lr_crop {p['lr_crop']} is too small for the 7x7 discriminator")
    if int(p["iterations"]) < 1:
        raise ValueError("iterations must be >= 1")
    missing = set(REGULARISERS) - set(p["lambdas"])
    if missing:
        raise ValueError(f"missing lambdas: {sorted(missing)}")
    return p


# --------------------------------------------------------------------------- unit preparation
@dataclass
class _UnitPlan:
    """Crop positions of one unit for every iteration, on the slices actually used."""

    index: int
    hr_slices: np.ndarray  # (n_used, H, W) float32
    lr_slices: np.ndarray
    hr_pos: np.ndarray  # (iters, 3): used-slice index, row, col
    lr_pos: np.ndarray
    noise_rng: np.random.Generator
    torch_seed: int


def _as_stack(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{what} must be (slices, H, W) or (H, W), got shape {a.shape}")
    return a


def _usable_slices(stack: np.ndarray, crop: int) -> np.ndarray:
    """Indices of slices at least ``crop`` wide, finite and not constant (foreground)."""
    if stack.shape[1] < crop or stack.shape[2] < crop:
        return np.zeros(0, dtype=np.int64)
    flat = stack.reshape(len(stack), -1)
    finite = np.isfinite(flat).all(axis=1)
    varying = np.zeros(len(stack), dtype=bool)
    varying[finite] = np.ptp(flat[finite], axis=1) > 0
    return np.flatnonzero(varying)


def _sample_positions(
    stack: np.ndarray,
    weight: np.ndarray | None,
    choice: np.ndarray,
    crop: int,
    rng: np.random.Generator,
    sampling: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient-weighted crop corners on the slices chosen for each iteration.

    ``choice``: slice index (into ``stack``) per iteration. Returns the used slices
    (float32 copy) and ``(iterations, 3)`` positions ``[used_slice, row, col]`` (top-left
    corners). Weight maps are computed only for the slices actually used.
    """
    used, inverse = np.unique(choice, return_inverse=True)
    pos = np.zeros((len(choice), 3), dtype=np.int64)
    pos[:, 0] = inverse
    for j, s in enumerate(used):
        if weight is not None:
            w = np.asarray(weight[s], dtype=np.float32)
        else:
            w = gradient_weight_map(stack[s], sampling["clip_percentile"], sampling["window"])
        prob = crop_center_probabilities(w, crop)
        sel = np.flatnonzero(inverse == j)
        pos[sel, 1:] = sample_crop_corners(prob, crop, len(sel), rng)
    slices = np.ascontiguousarray(stack[used], dtype=np.float32)
    return slices, pos


def _prepare_unit(index: int, unit: DSGANUnit, p: dict, iterations: int) -> _UnitPlan | str:
    """Sample all crops of a unit, or return the reason it is skipped."""
    try:
        hr = _as_stack(unit.hr, "hr")
        lr = _as_stack(unit.lr, "lr")
    except ValueError as e:
        return str(e)
    for what, w, a in (("hr_weight", unit.hr_weight, hr), ("lr_weight", unit.lr_weight, lr)):
        if w is not None and _as_stack(w, what).shape != a.shape:
            return f"{what} has shape {np.shape(w)}, expected {a.shape}"
    hr_ok = _usable_slices(hr, p["hr_crop"])
    lr_ok = _usable_slices(lr, p["lr_crop"])
    if len(hr_ok) == 0:
        return (
            f"no usable HR slice (need finite, non-constant slices of at least "
            f"{p['hr_crop']}x{p['hr_crop']}; got {hr.shape[0]} of {hr.shape[1]}x{hr.shape[2]})"
        )
    if len(lr_ok) == 0:
        return (
            f"no usable LR slice (need finite, non-constant slices of at least "
            f"{p['lr_crop']}x{p['lr_crop']}; got {lr.shape[0]} of {lr.shape[1]}x{lr.shape[2]})"
        )
    for what, a in (("HR", hr), ("LR", lr)):
        top = float(np.nanmax(np.abs(a)))
        if top > 10:
            logger.warning(
                "unit %s: %s intensities reach %.3g; DSGAN thresholds assume intensities "
                "normalised to about [0, 1]",
                unit.name,
                what,
                top,
            )
    crop_ss, noise_ss, init_ss = np.random.SeedSequence(int(unit.seed)).spawn(3)
    rng = np.random.default_rng(crop_ss)
    w_hr = None if unit.hr_weight is None else _as_stack(unit.hr_weight, "hr_weight")
    w_lr = None if unit.lr_weight is None else _as_stack(unit.lr_weight, "lr_weight")
    # Slice location per iteration (the paper trains on the HR and LR slice of one
    # location); crops within the slices are drawn independently.
    pair = unit.paired_slices if unit.paired_slices is not None else hr.shape[0] == lr.shape[0]
    if pair and hr.shape[0] != lr.shape[0]:
        return f"paired_slices needs as many HR as LR slices ({hr.shape[0]} vs {lr.shape[0]})"
    paired = np.intersect1d(hr_ok, lr_ok) if pair else np.zeros(0, dtype=np.int64)
    if unit.paired_slices and len(paired) == 0:
        return "no slice location is usable in both HR and LR"
    if len(paired):
        hr_choice = lr_choice = rng.choice(paired, size=iterations)
    else:
        hr_choice = rng.choice(hr_ok, size=iterations)
        lr_choice = rng.choice(lr_ok, size=iterations)
    hr_slices, hr_pos = _sample_positions(hr, w_hr, hr_choice, p["hr_crop"], rng, p["sampling"])
    lr_slices, lr_pos = _sample_positions(lr, w_lr, lr_choice, p["lr_crop"], rng, p["sampling"])
    return _UnitPlan(
        index=index,
        hr_slices=hr_slices,
        lr_slices=lr_slices,
        hr_pos=hr_pos,
        lr_pos=lr_pos,
        noise_rng=np.random.default_rng(noise_ss),
        torch_seed=int(init_ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)),
    )


class _CropGatherer:
    """Gathers one crop per unit per iteration from a flat buffer with a single ``take``."""

    def __init__(
        self, stacks: list[np.ndarray], pos: list[np.ndarray], crop: int, device: torch.device
    ) -> None:
        sizes = [s.size for s in stacks]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.buffer = torch.from_numpy(np.concatenate([s.ravel() for s in stacks])).to(device)
        widths = np.array([s.shape[2] for s in stacks], dtype=np.int64)
        plane = np.array([s.shape[1] * s.shape[2] for s in stacks], dtype=np.int64)
        # offsets[it, n] = start_n + slice * H*W + row * W + col
        offsets = np.stack(
            [
                st + p[:, 0] * pl + p[:, 1] * w + p[:, 2]
                for st, p, pl, w in zip(starts, pos, plane, widths)
            ],
            axis=1,
        )
        self.offsets = torch.from_numpy(offsets).to(device)
        ar = torch.arange(crop, dtype=torch.int64)
        rel = ar[None, :, None] * torch.from_numpy(widths)[:, None, None] + ar[None, None, :]
        self.rel = rel.to(device)  # (N, crop, crop)

    def __call__(self, it: int) -> torch.Tensor:
        return self.buffer.take(self.offsets[it][:, None, None] + self.rel)


# --------------------------------------------------------------------------- losses
class _Regularisers(torch.nn.Module):
    """KernelGAN's kernel regularisers and bicubic target, batched over units."""

    def __init__(self, scale: int, kernel_size: int, hr_crop: int) -> None:
        super().__init__()
        self.scale, self.kernel_size, self.hr_crop = scale, kernel_size, hr_crop
        self.n_out = (hr_crop - kernel_size) // scale + 1
        b = bicubic_kernel_1d(scale)
        length = len(b)
        # Output m of G is centred on HR position s*m + c; the bicubic window starting at
        # s*m + t0 is centred there too.
        c = wanted_center(kernel_size, scale)
        t0 = c - (length - 1) / 2
        if t0 != int(t0):
            raise ValueError(f"bicubic target cannot be aligned for scale {scale}")
        t0 = int(t0)
        self.pad_lo = max(0, -t0)
        self.start = t0 + self.pad_lo
        self.pad_hi = max(0, scale * (self.n_out - 1) + t0 + length - hr_crop)
        self.register_buffer("bicubic", torch.from_numpy(np.outer(b, b)).float()[None, None])
        self.register_buffer("mask", torch.from_numpy(boundary_penalty_mask(kernel_size)))
        self.register_buffer("indices", torch.arange(kernel_size, dtype=torch.float32))
        self.center = c

    def bicubic_target(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` HR crops -> ``(N, 1, n_out, n_out)`` bicubic-downscaled target."""
        if self.pad_lo or self.pad_hi:
            x = F.pad(x, (self.pad_lo, self.pad_hi, self.pad_lo, self.pad_hi), mode="reflect")
        x = x[:, :, self.start :, self.start :]
        y = F.conv2d(x, self.bicubic, stride=self.scale)
        return y[:, :, : self.n_out, : self.n_out]

    def kernel_terms(self, k: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-unit ``(sum2one, boundaries, center, sparse)`` of ``(N, K, K)`` kernels."""
        total = k.sum(dim=(1, 2))
        sum2one = (1.0 - total).abs()
        boundaries = (k * self.mask).abs().mean(dim=(1, 2))
        com_r = (k.sum(dim=2) * self.indices).sum(dim=1) / total
        com_c = (k.sum(dim=1) * self.indices).sum(dim=1) / total
        center = 0.5 * ((com_r - self.center) ** 2 + (com_c - self.center) ** 2)
        sparse = (k * k + 1e-20).pow(0.1).mean(dim=(1, 2))
        return sum2one, boundaries, center, sparse


# --------------------------------------------------------------------------- schedule
class _LambdaSchedule:
    """KernelGAN's ``Learner`` (regulariser weights), vectorised over units."""

    def __init__(self, n: int, lambdas: dict, sched: dict) -> None:
        self.lam = np.tile(
            np.array([float(lambdas[r]) for r in REGULARISERS], dtype=np.float32), (n, 1)
        )
        self.similar = np.zeros(n, dtype=bool)
        self.counter = np.zeros(n, dtype=np.int64)
        self.inserted = np.zeros(n, dtype=bool)
        self.similar_at = np.full(n, -1, dtype=np.int64)
        self.s = sched

    def update(self, iteration: int, bicubic_loss: np.ndarray) -> None:
        """Call after training iteration ``iteration`` with that iteration's bicubic losses."""
        if iteration == 0:
            return
        s = self.s
        was_similar = self.similar.copy()
        under = bicubic_loss < s["bicubic_threshold"]
        pending = ~was_similar
        become = pending & under & (self.counter >= s["threshold_patience"])
        self.similar |= become
        self.similar_at[become] = iteration
        self.counter[pending & under & ~become] += 1
        self.counter[pending & ~under] = 0
        if iteration % int(s["decay_every"]) == 0:
            lam_b = self.lam[:, 0]
            dec = was_similar & (lam_b > s["bicubic_min"])
            lam_b[dec] = np.maximum(lam_b[dec] / s["decay_factor"], s["bicubic_min"])
            ins = dec & ~self.inserted & (lam_b < s["switch_below"])
            self.lam[ins, 3] = s["center_end"]
            self.lam[ins, 4] = s["sparse_end"]
            self.inserted |= ins


# --------------------------------------------------------------------------- training
def _keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS (CPU training).

    Every iteration allocates and frees the same tens of MB of activations; with glibc's
    defaults part of that is unmapped and re-faulted (zero-filled) every iteration, ~6000
    page faults per iteration for 48 units, a few percent of the run time. Allocations
    below 32 MB then come from the heap and freed heap memory is kept (up to 1 GB).
    Process-wide and harmless; a no-op where glibc is not available.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


_MALLOC_TUNED = False


class BatchTrainer:
    """N units trained together: stacked G weights, stacked D, two Adams, per-unit schedule.

    ``step(it)`` runs one training iteration of every unit (G step, then D step, then the
    schedule); :meth:`results` collapses and post-processes the kernels. Public so that
    the benchmark can time steady-state steps.
    """

    def __init__(
        self,
        plans: list[_UnitPlan],
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
        betas = tuple(p["betas"])
        # Adam is element-wise: on stacked parameters it is exactly per-unit Adam.
        fused: dict[str, Any] = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.opt_g = torch.optim.Adam(self.g_weights, lr=p["g_lr"], betas=betas, **fused)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=p["d_lr"], betas=betas, **fused)
        self.regs = _Regularisers(scale, self.ksize, self.hr_crop).to(device)
        self.sched = _LambdaSchedule(n, p["lambdas"], p["schedule"])
        self.lam_t = torch.from_numpy(self.sched.lam.copy()).to(device)
        self.hr_gather = _CropGatherer(
            [pl.hr_slices for pl in plans], [pl.hr_pos for pl in plans], self.hr_crop, device
        )
        self.lr_gather = _CropGatherer(
            [pl.lr_slices for pl in plans], [pl.lr_pos for pl in plans], self.lr_crop, device
        )
        self.noise_rngs = [pl.noise_rng for pl in plans]
        self.noise_sd = float(p["d_input_noise_sd"])
        self.noise: torch.Tensor | None = None
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
        scale = self.scale
        if it % _NOISE_BLOCK == 0 or self.noise is None:
            self._noise_block(it)
        x_hr = self.hr_gather(it)  # (N, hr_crop, hr_crop)
        y_lr = self.lr_gather(it)  # (N, lr_crop, lr_crop)
        x_hr = x_hr[:, None]
        with torch.no_grad():
            target = self.regs.bicubic_target(x_hr)

        # D's spectral-normalised weights (one power iteration): D does not change
        # before its own update, so the G step uses them frozen and the D step with grad.
        dw_d = self.disc.normalized_weights(1)
        dw = {key: v.detach() for key, v in dw_d.items()}

        # ---- G step: adversarial + regularisers (D weights frozen, no D gradients)
        k = compose_kernel(self.g_weights)
        g_out = apply_kernels(x_hr, k, scale)  # (N, 1, lr_crop, lr_crop)
        d_fake = self.disc(g_out, dw)
        adv = (1.0 - d_fake).mean(dim=(1, 2, 3))
        bic = (g_out - target).pow(2).mean(dim=(1, 2, 3))
        s2o, bnd, cen, spa = self.regs.kernel_terms(k)
        terms = torch.stack([bic, s2o, bnd, cen, spa], dim=1)
        total_g = adv + (terms * self.lam_t).sum(dim=1)
        ok_g = self.alive & torch.isfinite(total_g)
        self.opt_g.zero_grad(set_to_none=True)
        torch.where(ok_g, total_g, torch.zeros_like(total_g)).sum().backward()
        self.opt_g.step()

        # ---- D step: real LR vs G(HR) + noise, each crop its own BatchNorm batch
        with torch.no_grad():
            fake = apply_kernels(x_hr, compose_kernel(self.g_weights), scale)[:, 0]
            fake = fake + self.noise[it % _NOISE_BLOCK]
        # Real and generated crops in one pass with the same spectral-normalised weights;
        # each crop is its own BatchNorm batch, as in two separate forward calls.
        d_out = self.disc(torch.stack([y_lr, fake], dim=1), dw_d)  # (N, 2, h, w)
        d_real = (1.0 - d_out[:, 0]).mean(dim=(1, 2))
        d_fake_loss = d_out[:, 1].mean(dim=(1, 2))
        loss_d = 0.5 * (d_real + d_fake_loss)
        ok = ok_g & torch.isfinite(loss_d)
        self.opt_d.zero_grad(set_to_none=True)
        torch.where(ok, loss_d, torch.zeros_like(loss_d)).sum().backward()
        self.opt_d.step()

        # ---- bookkeeping (one host transfer per iteration)
        stats = torch.cat([torch.stack([adv, d_real, d_fake_loss, loss_d], 1), terms], 1)
        stats_np = stats.detach().cpu().numpy().astype(np.float64)
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


def _train_batch(
    plans: list[_UnitPlan],
    units: list[DSGANUnit],
    scale: int,
    p: dict,
    device: torch.device,
    progress: bool,
    desc: str,
) -> list[DSGANResult]:
    trainer = BatchTrainer(plans, [units[pl.index].name for pl in plans], scale, p, device)
    trainer.run(progress, desc)
    return trainer.results()


def train_dsgan(
    units: list[DSGANUnit],
    scale: int,
    params: dict | None = None,
    device: str = "cpu",
    units_per_batch: int | None = None,
    progress: bool = True,
) -> list[DSGANResult]:
    """Train one DSGAN per unit, many units at once; return one result per unit, in order.

    Parameters
    ----------
    units:
        Training units (:class:`DSGANUnit`).
    scale:
        Integer in-plane downsampling factor (HR spacing / LR spacing).
    params:
        The plans' "dsgan" section (:data:`DEFAULT_DSGAN_PARAMS` fills missing keys).
    device:
        Torch device. On CPU the number of torch threads is set to the available cores
        for the duration of the call.
    units_per_batch:
        Units trained together (default :data:`DEFAULT_UNITS_PER_BATCH`).
    progress:
        Show a tqdm bar over iterations.

    Returns
    -------
    list of :class:`DSGANResult`. ``losses`` holds the last iteration's ``g_adv``,
    ``d_real``, ``d_fake``, ``d`` and regulariser values (unweighted), the final
    ``lambda_*`` and ``similar_to_bicubic_at`` (iteration at which the bicubic loss
    threshold was met, None if never).
    """
    p = resolve_params(params, scale)
    dev = torch.device(device)
    iters = int(p["iterations"])
    per = int(units_per_batch or DEFAULT_UNITS_PER_BATCH)
    if per < 1:
        raise ValueError("units_per_batch must be >= 1")
    results: list[DSGANResult | None] = [None] * len(units)
    # Balanced batches (100 units with 72 per batch -> 50 + 50, not 72 + 28); crops are
    # planned batch by batch so that only one batch's slices are copied at a time.
    n_batches = max(1, -(-len(units) // per))
    bounds = np.linspace(0, len(units), n_batches + 1).round().astype(int)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        set_compute_threads()
        _keep_freed_memory()
    try:
        for b in range(n_batches):
            plans: list[_UnitPlan] = []
            for i in range(bounds[b], bounds[b + 1]):
                plan = _prepare_unit(i, units[i], p, iters)
                if isinstance(plan, str):
                    logger.warning("DSGAN unit %s skipped: %s", units[i].name, plan)
                    results[i] = DSGANResult(units[i].name, None, None, {}, "skipped", plan)
                else:
                    plans.append(plan)
            if not plans:
                continue
            t0 = time.perf_counter()
            desc = f"DSGAN batch {b + 1}/{n_batches} ({len(plans)} units)"
            out = _train_batch(plans, units, int(scale), p, dev, progress, desc)
            dt = time.perf_counter() - t0
            logger.info(
                "%s: %d iterations in %.1f s (%.2f ms per unit-iteration)",
                desc,
                iters,
                dt,
                1e3 * dt / (iters * len(plans)),
            )
            for pl, res in zip(plans, out):
                results[pl.index] = res
    finally:
        torch.set_num_threads(threads)
    return [r for r in results if r is not None]
