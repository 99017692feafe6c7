"""EDSR training throughput (patches/s): straightforward formulation vs mrisr's trainer.

Three figures, in one run, on the same model (baseline EDSR, 16 blocks x 64 features),
batch (16 LR patches of 48x48 -> 96x96, x2) and data:

* ``straightforward``: the EDSR reference code's formulation: contiguous NCHW tensors,
  default Adam, ``zero_grad(set_to_none=False)``, uniform random crops + numpy flips and
  rotations read in the training loop (single-threaded loading);
* ``trainer``: :class:`mrisr.training.trainer.EDSRTrainer` itself (``run``) with its real
  data pipeline: blosc2 stores, gradient-weighted sampling, batchgenerators loader,
  dihedral augmentation, checkpoint/log machinery; channels_last, fused Adam,
  ``set_to_none``, and bf16 autocast where the CPU computes bf16 natively (AMX /
  AVX512-BF16; float32 weights, optimiser state and loss);
* ``model step only``: the trainer's optimisation step (same layout, optimiser, precision)
  on a batch already in memory: the ceiling the trainer can reach.

Bars (2-core machine): trainer >= 1.6 x straightforward, trainer >= 0.9 x model-step-only.

``--ablation`` adds the float32 step with one optimisation changed at a time (layout,
oneDNN, Adam implementation, ``set_to_none``, threads, torch.compile), bf16 variants, the
float32 trainer (``EDSRTrainer_fp32``) and the trainer with 0, 1, 2 loader processes.

Every figure runs in a fresh process. Each is the median over the timed iterations (after
warm-up), and the best over ``--rounds`` interleaved rounds; before each figure the script
waits for other processes to leave the CPUs idle (figures it had to take on a busy
machine are marked ``*``).

    python benchmarks/bench_edsr.py                    # about 3 minutes on 2 cores
    python benchmarks/bench_edsr.py --ablation --rounds 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrisr.networks.edsr import EDSR
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.preprocessing.sampling import gradient_weight_map
from mrisr.training.optimisation import Optimisation, OptimisationSettings, cpu_bf16_supported
from mrisr.training.trainer import EDSRTrainer

SCALE, PATCH, BATCH = 2, 48, 16


# ---------------------------------------------------------------------------- data
def make_store(folder: Path, cases: int = 4, slices: int = 24, size: int = 256) -> dict:
    """Preprocessed-like HR volumes (+ sampling weights) and their x2 synthetic LR."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    synthetic = {}
    for c in range(cases):
        vol = np.empty((slices, size, size), np.float32)
        for z in range(slices):
            f = rng.uniform(5, 15, 4)
            img = 0.5 + 0.2 * np.sin(xx / f[0] + z) * np.cos(yy / f[1])
            img += 0.1 * np.sin((xx + yy) / f[2]) + 0.03 * rng.standard_normal(img.shape)
            body = (
                (xx - size / 2) ** 2 / (0.4 * size) ** 2 + (yy - size / 2) ** 2 / (0.35 * size) ** 2
            ) < 1
            vol[z] = np.where(body, img, 0.0)
        name = f"case_{c:03d}"
        storage.save_array(folder / f"{name}_hr.b2nd", vol)
        storage.save_array(
            folder / f"{name}_hr_weight.b2nd", gradient_weight_map(vol).astype(np.float16)
        )
        lr = vol.reshape(slices, size // 2, 2, size // 2, 2).mean(axis=(2, 4))
        storage.save_array(folder / f"{name}_synthetic_lr.b2nd", lr)
        synthetic[name] = folder / f"{name}_synthetic_lr.b2nd"
    return synthetic


def make_plans(iterations: int) -> Plans:
    sr = {
        "name": "edsr",
        "lr_patch": PATCH,
        "hr_patch": PATCH * SCALE,
        "num_blocks": 16,
        "num_features": 64,
        "res_scale": 1.0,
        "batch_size": BATCH,
        "iterations": iterations,
        "learning_rate": 1e-4,
        "betas": [0.9, 0.999],
        "lr_milestones": [10**9],
        "lr_gamma": 0.5,
        "grad_clip_norm": 1.0,
        "augmentation": "dihedral8",
        "checkpoint_every": 10**9,
        "validate_every": 10**9,
    }
    return Plans(
        {
            "plans_name": "benchPlans",
            "dataset_name": "Dataset999_Bench",
            "scale": SCALE,
            "hr_inplane_spacing": 1.0,
            "lr_working_inplane_spacing": 2.0,
            "through_plane_normal": [0.0, 0.0, 1.0],
            "preprocessing": {},
            "configurations": {"bench": {"degradation": {"name": "gaussian"}, "sr": sr}},
        }
    )


# ---------------------------------------------------------------------------- timing
def _busy_fraction(seconds: float = 1.0) -> float:
    """Fraction of the machine's CPU time in use over ``seconds`` (this process sleeps)."""
    try:

        def read() -> tuple[int, int]:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return sum(v), v[3] + v[4]  # total, idle + iowait

        t0, i0 = read()
        time.sleep(seconds)
        t1, i1 = read()
        return 1.0 - (i1 - i0) / max(t1 - t0, 1)
    except OSError:  # not Linux: cannot tell
        return 0.0


def wait_for_quiet(max_wait: float, threshold: float = 0.1) -> bool:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs idle."""
    end = time.time() + max_wait
    while True:
        if _busy_fraction() < threshold:
            return True
        if time.time() > end:
            return False
        time.sleep(5)


def rate(step_times: list[float]) -> float:
    return BATCH / statistics.median(step_times)


def straightforward(synthetic: dict, folder: Path, iters: int, warmup: int) -> float:
    """The reference formulation: NCHW, default Adam, loading in the loop."""
    torch.manual_seed(0)
    net = EDSR(SCALE)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999))
    loss_fn = torch.nn.L1Loss()
    arrays = [
        (storage.open_array(f), storage.open_array(folder / f"{c}_hr.b2nd"))
        for c, f in synthetic.items()
    ]
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        lr_b, hr_b = [], []
        for _ in range(BATCH):
            lr_a, hr_a = arrays[rng.integers(len(arrays))]
            z = rng.integers(lr_a.shape[0])
            y = rng.integers(0, lr_a.shape[1] - PATCH + 1)
            x = rng.integers(0, lr_a.shape[2] - PATCH + 1)
            lr = lr_a[z, y : y + PATCH, x : x + PATCH]
            hr = hr_a[z, SCALE * y : SCALE * (y + PATCH), SCALE * x : SCALE * (x + PATCH)]
            if rng.random() < 0.5:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            if rng.random() < 0.5:
                lr, hr = lr[::-1], hr[::-1]
            if rng.random() < 0.5:
                lr, hr = lr.T, hr.T
            lr_b.append(np.ascontiguousarray(lr))
            hr_b.append(np.ascontiguousarray(hr))
        lr_t = torch.from_numpy(np.stack(lr_b)[:, None])
        hr_t = torch.from_numpy(np.stack(hr_b)[:, None])
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(net(lr_t), hr_t)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return rate(times)


def model_step(
    iters: int,
    warmup: int,
    channels_last: bool = True,
    mkldnn: bool = True,
    adam: str = "fused",
    set_to_none: bool = True,
    threads: int | None = None,
    bf16: bool | None = None,
    compile_model: bool = False,
) -> float:
    """The trainer's optimisation step on an in-memory batch (options toggle one thing;
    ``bf16=None``: as the trainer decides, i.e. where the CPU computes bf16 natively)."""
    if bf16 is None:
        bf16 = cpu_bf16_supported()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
    try:
        torch.manual_seed(0)
        net = EDSR(SCALE)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        settings = OptimisationSettings(1e-4, (0.9, 0.999), (10**9,), 0.5, 1.0)
        opt = Optimisation(net, settings, torch.device("cpu"), cpu_bf16=bf16)
        if adam != "fused":
            opt.optimizer = torch.optim.Adam(
                net.parameters(), lr=1e-4, foreach=(adam == "foreach"), fused=False
            )
            opt.scheduler = torch.optim.lr_scheduler.MultiStepLR(opt.optimizer, [10**9])
        if not set_to_none:
            zero = opt.optimizer.zero_grad
            opt.optimizer.zero_grad = lambda set_to_none=True: zero(set_to_none=False)
        if compile_model:
            opt.network = torch.compile(net)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.rand(BATCH, 1, PATCH, PATCH).contiguous(memory_format=fmt)
        y = torch.rand(BATCH, 1, SCALE * PATCH, SCALE * PATCH).contiguous(memory_format=fmt)
        times = []
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            opt.step(x, y)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return rate(times)
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.mkldnn.enabled = True


class _TimedTrainer(EDSRTrainer):
    """EDSRTrainer recording when each iteration ends."""

    stamps: list[float] = []
    log_every = 10**9

    def on_iteration_end(self, iteration, loss):
        type(self).stamps.append(time.perf_counter())


def trainer(
    synthetic: dict,
    folder: Path,
    iters: int,
    warmup: int,
    workers: int | None,
    bf16: bool | None = None,
) -> float:
    """EDSRTrainer.run with the real pipeline; rate from per-iteration time stamps."""
    plans = make_plans(warmup + iters)
    _TimedTrainer.stamps = []
    _TimedTrainer.cpu_mixed_precision = bf16
    out = Path(tempfile.mkdtemp(dir=folder.parent))
    t = _TimedTrainer(plans, "bench", 0, out, "cpu", num_workers=workers, progress=False)
    t.run(PreprocessedDataset(folder), synthetic, [], continue_training=False)
    s = _TimedTrainer.stamps
    return rate(list(np.diff(s[warmup - 1 :])))


def isolated(fn: str, kwargs: dict) -> float:
    """Run one figure in a fresh process: no state (threads, oneDNN caches, compiled
    code, allocator) carries over from one figure to the next."""
    ctx = mp.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(globals()[fn], **kwargs).result()


# ---------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=8, help="timed iterations per figure")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best is kept)")
    p.add_argument("--ablation", action="store_true", help="also time each optimisation")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="S",
        help="before each figure, wait up to S seconds for other processes to leave the "
        "CPUs idle (figures taken on a busy machine are marked *)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"EDSR x{SCALE} 16x64, batch {BATCH} of {PATCH}x{PATCH} LR patches; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"trainer precision on this CPU: {'bf16 autocast' if cpu_bf16_supported() else 'fp32'}",
        flush=True,
    )
    n, w = args.iterations, args.warmup
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        folder.mkdir()
        synthetic = make_store(folder)
        common = {"synthetic": synthetic, "folder": folder, "iters": n, "warmup": w}
        runs: dict[str, tuple[str, dict]] = {
            "straightforward (NCHW, loading in the loop)": ("straightforward", common),
            "trainer (EDSRTrainer.run, real pipeline)": ("trainer", {**common, "workers": None}),
            "model step only (trainer's step)": ("model_step", {"iters": n, "warmup": w}),
        }
        if args.ablation:
            f32 = {"iters": n, "warmup": w, "bf16": False}
            runs.update(
                {
                    "  step fp32, NCHW": ("model_step", {**f32, "channels_last": False}),
                    "  step fp32, channels_last": ("model_step", f32),
                    "  step fp32, channels_last, mkldnn off": (
                        "model_step",
                        {**f32, "mkldnn": False},
                    ),
                    "  step fp32, channels_last, Adam for-loop": (
                        "model_step",
                        {**f32, "adam": "loop"},
                    ),
                    "  step fp32, channels_last, Adam foreach": (
                        "model_step",
                        {**f32, "adam": "foreach"},
                    ),
                    "  step fp32, channels_last, set_to_none=False": (
                        "model_step",
                        {**f32, "set_to_none": False},
                    ),
                    "  step fp32, channels_last, 1 thread": ("model_step", {**f32, "threads": 1}),
                    "  step fp32, channels_last, torch.compile": (
                        "model_step",
                        {**f32, "compile_model": True},
                    ),
                    "  step bf16, NCHW": (
                        "model_step",
                        {"iters": n, "warmup": w, "bf16": True, "channels_last": False},
                    ),
                    "  step bf16, channels_last, torch.compile": (
                        "model_step",
                        {"iters": n, "warmup": w, "bf16": True, "compile_model": True},
                    ),
                    "  trainer fp32 (EDSRTrainer_fp32)": (
                        "trainer",
                        {**common, "workers": None, "bf16": False},
                    ),
                    "  trainer, 0 loader processes": ("trainer", {**common, "workers": 0}),
                    "  trainer, 1 loader process": ("trainer", {**common, "workers": 1}),
                    "  trainer, 2 loader processes": ("trainer", {**common, "workers": 2}),
                }
            )
        quiet_best: dict[str, float] = {}
        busy_best: dict[str, float] = {}
        for r in range(args.rounds):
            for name, (fn, kwargs) in runs.items():
                quiet = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else True
                try:
                    v = isolated(fn, kwargs)
                except Exception as e:  # an optimisation that does not work here
                    print(f"  [{name}: failed: {type(e).__name__}: {str(e)[:80]}]", flush=True)
                    v = float("nan")
                mark = " " if quiet else "*"
                print(f"round {r + 1}  {name:<48} {v:7.2f} patches/s {mark}", flush=True)
                pool = quiet_best if quiet else busy_best
                pool[name] = max(pool.get(name, float("-inf")), v)
    names = list(runs)
    best = {k: quiet_best.get(k, busy_best.get(k, float("nan"))) for k in names}
    sf, tr, ms = (best[k] for k in names[:3])
    print("\nbest of rounds (patches/s):")
    for k in names:
        print(f"  {k:<50} {best[k]:7.2f}{'' if k in quiet_best else ' * (busy machine)'}")
    print(
        f"\ntrainer / straightforward = {tr / sf:.2f} (bar >= 1.6)   "
        f"trainer / model step = {tr / ms:.2f} (bar >= 0.90)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
