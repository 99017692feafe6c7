"""Benchmark of the DSGAN kernel estimation: straightforward loop vs the batched trainer.

Straightforward formulation (what KernelGAN's reference code does, one slice at a time):
batch of one crop, G evaluated layer by layer on the 64x64 crop, the kernel for the
regularisers obtained by pushing a delta through G (KernelGAN's ``calc_curr_k``), D with
torch's own ``spectral_norm`` and BatchNorm, Sobel maps by convolution, one Python loop
iteration per training iteration. The batched trainer is
:func:`mrisr.degradation.dsgan.trainer.train_dsgan`.

Usage::

    python benchmarks/bench_dsgan.py                    # compare on 24 slices x 100 iterations
    python benchmarks/bench_dsgan.py --slices 8 --iterations 100 --units-per-batch 8
    python benchmarks/bench_dsgan.py --full             # 72 slices x 3000 iterations
    python benchmarks/bench_dsgan.py --sweep 8,16,32,72 # ms per slice-iteration vs batch size
    python benchmarks/bench_dsgan.py --quality 6        # kernel recovery, 6 x 3 slices

The figures depend on what else runs on the machine: each timing is repeated
(``--repeats``) and the best and median are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mrisr.degradation.dsgan import losses as dsgan_losses
from mrisr.degradation.dsgan import params as dsgan_params
from mrisr.degradation.dsgan import trainer as core
from mrisr.degradation.dsgan import unit_batches
from mrisr.degradation.dsgan import units as dsgan_units
from mrisr.degradation.kernel_analysis import kernel_statistics
from mrisr.degradation.kernels import degrade_with_kernel, gaussian_kernel
from mrisr.networks.linear_generator import LinearGenerator
from mrisr.networks.patch_discriminator import PatchDiscriminator, sobel_features
from mrisr.preprocessing.sampling import (
    crop_center_probabilities,
    gradient_weight_map,
    sample_crop_corners,
)
from mrisr.utilities.memory import keep_freed_memory
from mrisr.utilities.threads import compute_threads

#: the update rule the planner gives ``dsgan_edsr`` (``mrisr.degradation.dsgan.planning``)
PLANNED = "simultaneous"


# --------------------------------------------------------------------------- data
def make_slices(n: int, hr_size: int = 256, scale: int = 2, seed: int = 0):
    """Synthetic HR slices (smooth random textures) and their "real" LR.

    LR = anisotropic Gaussian blur (sigma 2.0 x 1.0 HR pixels) + decimation + noise.
    """
    rng = np.random.default_rng(seed)
    hr = np.empty((n, hr_size, hr_size), np.float32)
    for i in range(n):
        a = ndimage.gaussian_filter(rng.standard_normal((hr_size, hr_size)), 4)
        b = ndimage.gaussian_filter(rng.standard_normal((hr_size, hr_size)), 0.7)
        img = a / a.std() + 0.5 * b / b.std()
        hr[i] = (img - img.min()) / (img.max() - img.min())
    lr = degrade_with_kernel(hr, gaussian_kernel((2.0, 1.0), scale, size=13), scale)
    lr += 0.005 * rng.standard_normal(lr.shape).astype(np.float32)
    return hr, lr


# --------------------------------------------------------------------------- reference
def kernelgan_curr_k(g: LinearGenerator) -> torch.Tensor:
    """KernelGAN's ``calc_curr_k``: a delta pushed through every layer, flipped."""
    k = g.kernel_size
    delta = torch.ones(1, 1, 1, 1)
    curr = None
    for i, layer in enumerate(g.layers):
        curr = (
            F.conv2d(delta, layer.weight, padding=k - 1) if i == 0 else F.conv2d(curr, layer.weight)
        )
    return curr[0, 0].flip(0, 1)


def straightforward_dsgan(
    hr: np.ndarray, lr: np.ndarray, scale: int, params: dict, seed: int
) -> np.ndarray:
    """One slice, KernelGAN's loop. Returns the raw kernel."""
    p = dsgan_params.resolve_params(params, scale)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    iters, hc, lc = int(p["iterations"]), p["hr_crop"], p["lr_crop"]
    g = LinearGenerator(scale, p["g_channels"])
    d = PatchDiscriminator(p["d_channels"])
    betas = tuple(p["betas"])
    opt_g = torch.optim.Adam(g.parameters(), lr=p["g_lr"], betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=p["d_lr"], betas=betas)
    regs = dsgan_losses.Regularisers(scale, p["kernel_size"], hc)
    sched = dsgan_losses.LambdaSchedule(1, p["lambdas"], p["schedule"])
    hr_c = sample_crop_corners(
        crop_center_probabilities(gradient_weight_map(hr), hc), hc, iters, rng
    )
    lr_c = sample_crop_corners(
        crop_center_probabilities(gradient_weight_map(lr), lc), lc, iters, rng
    )
    hr_t, lr_t = torch.from_numpy(hr), torch.from_numpy(lr)
    for it in range(iters):
        (r, c), (rr, cc) = hr_c[it], lr_c[it]
        x = hr_t[r : r + hc, c : c + hc][None, None]
        y = lr_t[rr : rr + lc, cc : cc + lc][None, None]
        # G step
        opt_g.zero_grad()
        g_out = g(x)
        loss_g = (d(sobel_features(g_out)) - 1).abs().mean()
        k = kernelgan_curr_k(g)
        bic = (g_out - regs.bicubic_target(x)).pow(2).mean()
        terms = torch.stack([bic, *[t[0] for t in regs.kernel_terms(k[None])]])
        lam = torch.from_numpy(sched.lam[0])
        (loss_g + (terms * lam).sum()).backward()
        opt_g.step()
        # D step
        opt_d.zero_grad()
        d_real = d(sobel_features(y))
        g_out = g(x)
        fake = (g_out + torch.randn_like(g_out) * p["d_input_noise_sd"]).detach()
        d_fake = d(sobel_features(fake))
        (0.5 * ((d_real - 1).abs().mean() + d_fake.abs().mean())).backward()
        opt_d.step()
        sched.update(it, np.array([float(bic.detach())]))
        if it in set(p["lr_decay_iterations"]) and it > 0:
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] /= p["lr_decay_factor"]
    return g.kernel().detach().numpy()


# --------------------------------------------------------------------------- timing
def _repeat(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _fmt(ts: list[float], work: int) -> str:
    best, med = min(ts), statistics.median(ts)
    return (
        f"best {1e3 * best / work:.3f} ms/slice-iter ({work / best:.0f} slice-iter/s), "
        f"median {1e3 * med / work:.3f} ms/slice-iter"
    )


def compare(
    n_slices: int,
    iterations: int,
    units_per_batch: int | None,
    repeats: int,
    precision: str,
    update: str,
) -> None:
    hr, lr = make_slices(n_slices)
    params = {"iterations": iterations, "precision": precision}
    work = n_slices * iterations
    units = [dsgan_units.DSGANUnit(f"s{i}", hr[i], lr[i], seed=i) for i in range(n_slices)]

    def run_ref() -> None:
        for i in range(n_slices):
            straightforward_dsgan(hr[i], lr[i], 2, params, seed=i)

    def run_batched() -> None:
        unit_batches.train_dsgan(
            units, 2, {**params, "update": update}, units_per_batch=units_per_batch, progress=False
        )

    print(
        f"{n_slices} slices x {iterations} iterations, {torch.get_num_threads()} threads, "
        f"batched update {update}"
    )
    t_ref = _repeat(run_ref, repeats)
    print(f"  straightforward: {_fmt(t_ref, work)}")
    torch.set_num_threads(compute_threads())
    t_bat = _repeat(run_batched, repeats)
    print(f"  batched        : {_fmt(t_bat, work)}")
    print(
        f"  speed-up: {min(t_ref) / min(t_bat):.1f}x (best/best), "
        f"{statistics.median(t_ref) / statistics.median(t_bat):.1f}x (median/median)"
    )


def sweep(sizes: list[int], iterations: int, update: str) -> None:
    """Steady-state ms per slice-iteration of :class:`BatchTrainer` vs units per batch."""
    hr, lr = make_slices(max(sizes))
    p = dsgan_params.resolve_params({"iterations": 3000, "update": update}, 2)
    torch.set_num_threads(compute_threads())
    if os.environ.get("MRISR_NO_MALLOC_TUNING") is None:
        keep_freed_memory()  # as train_dsgan does
    for n in sizes:
        units = [dsgan_units.DSGANUnit(f"s{i}", hr[i], lr[i], seed=i) for i in range(n)]
        plans = [dsgan_units.prepare_unit(i, u, p, 3000) for i, u in enumerate(units)]
        tr = core.BatchTrainer(plans, [u.name for u in units], 2, p, torch.device("cpu"))
        for it in range(5):
            tr.step(it)
        ts = []
        for it in range(5, 5 + iterations):
            t = time.perf_counter()
            tr.step(it)
            ts.append(time.perf_counter() - t)
        print(
            f"  {n:3d} units per batch: median {1e3 * statistics.median(ts) / n:.3f}, "
            f"best {1e3 * min(ts) / n:.3f} ms/slice-iter"
        )


def full(n_slices: int, units_per_batch: int | None) -> None:
    """The default 3000-iteration estimation for 72 slices of 128x128 LR (HR 256x256)."""
    hr, lr = make_slices(n_slices)
    units = [dsgan_units.DSGANUnit(f"s{i:02d}", hr[i], lr[i], seed=i) for i in range(n_slices)]
    t = time.perf_counter()
    res = unit_batches.train_dsgan(units, 2, None, units_per_batch=units_per_batch, progress=True)
    dt = time.perf_counter() - t
    ok = [r for r in res if r.status == "ok"]
    print(
        f"{n_slices} slices x 3000 iterations: {dt:.1f} s total "
        f"({1e3 * dt / (n_slices * 3000):.3f} ms/slice-iter); {len(ok)} ok"
    )
    sig = np.array([kernel_statistics(r.kernel)["sigma"] for r in ok])
    if len(sig):
        print(
            f"estimated sigma (y, x): median {np.median(sig, 0).round(2).tolist()}, "
            f"IQR y {np.percentile(sig[:, 0], [25, 75]).round(2).tolist()} "
            f"x {np.percentile(sig[:, 1], [25, 75]).round(2).tolist()} (truth [2.0, 1.0])"
        )


def quality(
    n_triples: int, units_per_batch: int | None, precision: str = "auto", update: str = PLANNED
) -> None:
    """Full-length kernel-recovery check (the test's setting, repeated with other seeds).

    Three texture slices (skimage grass, gravel, brick, 512x512) blurred with a Gaussian
    of sigma 2.0 (rows) x 1.0 (columns), decimated by 2, noise sd 0.005; one DSGAN per
    slice, 3000 iterations; per triple the element-wise median kernel. L1 distances are
    given as a ratio to the L1 distance of the paper's isotropic sigma-1.5 Gaussian.
    """
    from skimage import data

    truth = gaussian_kernel((2.0, 1.0), 2, size=13)
    truth17 = np.pad(truth, 2)
    l1_base = np.abs(gaussian_kernel((1.5, 1.5), 2, size=17) - truth17).sum()
    sig_true = np.array(kernel_statistics(truth17)["sigma"])
    units = []
    for t in range(n_triples):
        for i, img in enumerate((data.grass(), data.gravel(), data.brick())):
            hr = img.astype(np.float32)
            hr = (hr - hr.min()) / (hr.max() - hr.min())
            lr = degrade_with_kernel(hr, truth, 2)
            lr += 0.005 * np.random.default_rng(i).standard_normal(lr.shape).astype(np.float32)
            units.append(dsgan_units.DSGANUnit(f"t{t}-{i}", hr, lr, seed=3 * t + i))
    t0 = time.perf_counter()
    params = {"precision": precision, "update": update}
    res = unit_batches.train_dsgan(units, 2, params, units_per_batch=units_per_batch, progress=True)
    print(f"{len(units)} units x 3000 iterations in {time.perf_counter() - t0:.0f} s")

    def score(k: np.ndarray) -> tuple[float, np.ndarray]:
        sig = np.array(kernel_statistics(k)["sigma"])
        return float(np.abs(k - truth17).sum() / l1_base), sig / sig_true - 1

    singles, medians = [], []
    for t in range(n_triples):
        ks = [r.kernel for r in res[3 * t : 3 * t + 3] if r.status == "ok"]
        singles += [score(k) for k in ks]
        med = np.median(np.stack(ks), axis=0)
        medians.append(score(med / med.sum()))
        print(
            f"  triple {t}: single L1 ratios {[round(s[0], 2) for s in singles[-len(ks) :]]}, "
            f"median kernel L1 ratio {medians[-1][0]:.2f}, sigma error "
            f"{np.round(medians[-1][1] * 100).tolist()} %"
        )
    for name, sc in (("single slices", singles), ("median of 3", medians)):
        ratios = np.array([s[0] for s in sc])
        errs = np.abs(np.array([s[1] for s in sc]))
        ok = (ratios <= 0.5) & (errs.max(axis=1) <= 0.25)
        print(
            f"{name}: L1 ratio median {np.median(ratios):.2f} (range {ratios.min():.2f}-"
            f"{ratios.max():.2f}), max |sigma error| {errs.max() * 100:.0f}%, "
            f"pass (ratio <= 0.5 and sigma within 25%) {ok.sum()}/{len(ok)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--units-per-batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="72 slices x 3000 iterations")
    ap.add_argument("--full-slices", type=int, default=72)
    ap.add_argument("--sweep", type=str, default=None, help="comma-separated batch sizes")
    ap.add_argument("--quality", type=int, default=0, help="kernel recovery, N triples")
    ap.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="the discriminator's arithmetic in the batched trainer (plans: dsgan.precision)",
    )
    ap.add_argument(
        "--update",
        default=PLANNED,
        choices=("alternating", "simultaneous"),
        help=f"the batched trainer's G/D update (plans: dsgan.update; dsgan_edsr plans {PLANNED})",
    )
    args = ap.parse_args()
    torch.set_num_threads(compute_threads())
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads")
    if args.quality:
        quality(args.quality, args.units_per_batch, args.precision, args.update)
    elif args.sweep:
        sweep([int(s) for s in args.sweep.split(",")], args.iterations, args.update)
    elif args.full:
        full(args.full_slices, args.units_per_batch)
    else:
        compare(
            args.slices,
            args.iterations,
            args.units_per_batch,
            args.repeats,
            args.precision,
            args.update,
        )


if __name__ == "__main__":
    main()
