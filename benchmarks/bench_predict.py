"""Inference speed: one 128x128x72 real LR scan super-resolved to 256x256x72.

    python benchmarks/bench_predict.py            # 1 fold, no TTA (the bar) + 8x TTA + 5 folds
    python benchmarks/bench_predict.py --quick    # the bar only
    python benchmarks/bench_predict.py --size 512 # large slices: tiled vs untiled (below)

Plans: the demo dataset's (built and planned in a temporary folder: scale x2, NLM on the
LR, the planned EDSR of 16 blocks x 64 features). Networks: the planned EDSR with random
weights (speed does not depend on the weights). The scan: a 128x128x72 LR volume on the
planned LR spacing, oblique direction, written as NIfTI.

Figures (each the best of ``--repeats`` runs):

* ``forward only``: the networks on the 72 prepared slices already in memory
  (``SRPredictor.predict_array``);
* ``total``: what ``mrisr_predict`` does per scan: read the file, LR preprocessing
  (physical-space resampling to the working grid, normalisation, NLM), the networks,
  intensity restoration, placement on the HR grid, atomic write.

Bars on the 2-core machine (one fold, no TTA): total <= 15 s and total <= 1.5 x forward.

``--size N`` (e.g. 512 or 640): an N x N x ``--slices`` (default 24) LR volume, prepared once
(LR preprocessing as in ``mrisr_predict``), then the networks on it twice, each run in a
fresh process so that its peak memory is its own: untiled (``tile_size=0``) and tiled
(``--tile-size``, default 256 LR pixels). Reported per run: forward time, peak RSS (and the
RSS before the forward, i.e. torch and the data), on CUDA the peak allocated GPU memory; then
the max abs difference tiled vs untiled as a fraction of the untiled intensity range (bar:
< 1e-3).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.imageio.sitk_io import read_scan, write_scan
from mrisr.inference.predictor import SRPredictor
from mrisr.networks.edsr import EDSR, edsr_init_args
from mrisr.plans import Plans
from mrisr.preprocessing.preprocessor import prepare_lr


def demo_plans(root: Path) -> Plans:
    from mrisr.cli.demo import set_roots
    from mrisr.dataset.demo import build_demo_dataset
    from mrisr.planning.plan_and_preprocess_api import plan_and_preprocess

    roots = set_roots(root)
    ds = build_demo_dataset(roots["mrisr_raw"])
    _, plans = plan_and_preprocess(ds.name, 2, preprocess=False)
    return plans


def make_scan(path: Path, plans: Plans, size: int = 128, slices: int = 72) -> None:
    """A smooth head-like phantom with noise on the planned LR grid (oblique direction)."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, slices),
        np.linspace(-1, 1, size),
        np.linspace(-1, 1, size),
        indexing="ij",
    )
    r = np.sqrt((y / 0.8) ** 2 + (x / 0.7) ** 2 + (z / 1.2) ** 2)
    vol = (r < 1) * (0.6 + 0.3 * np.sin(9 * x) * np.cos(7 * y) + 0.1 * np.cos(5 * z))
    vol = vol + 0.02 * rng.standard_normal(vol.shape)
    img = sitk.GetImageFromArray(np.abs(vol).astype(np.float32) * 1000)
    sp = plans.lr_spacing
    img.SetSpacing((sp, sp, 2.7))
    a = np.deg2rad(10)
    img.SetDirection((np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0, 0, 0, 1))
    img.SetOrigin((-80.0, -90.0, -100.0))
    write_scan(img, path)


def networks(plans: Plans, n: int) -> list[torch.nn.Module]:
    sr = plans.configuration("dsgan_edsr").sr
    args = edsr_init_args(sr, plans.scale)
    nets = []
    for i in range(n):
        torch.manual_seed(i)
        nets.append(EDSR(**args))
    return nets


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def large_child(work: Path, mode: str, tile: int, folds: int, tta: bool, device: str) -> None:
    """One run of ``--size``: the networks on the prepared slices, tiled or not."""
    plans = Plans.load(work / "plans.json")
    lr = np.load(work / "lr.npy")
    pred = SRPredictor(
        plans,
        networks(plans, folds),
        device=device,
        tta=tta,
        tile_size=0 if mode == "untiled" else tile,
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb()
    t = time.perf_counter()
    out = pred.predict_array(lr)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    np.save(work / f"sr_{mode}.npy", out)
    result = {
        "mode": mode,
        "seconds": dt,
        "rss_before_mb": before,
        "peak_rss_mb": _rss_mb(),
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "tile_size": pred.tile_size if mode == "tiled" else 0,
        "margin": pred.margin,
        "autocast": pred.autocast,
    }
    (work / f"{mode}.json").write_text(json.dumps(result, default=str), encoding="utf-8")


def large(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plans = demo_plans(work / "work")
        plans.save(work / "plans.json")
        src = work / "lr.nii.gz"
        make_scan(src, plans, size=args.size, slices=args.slices)
        t = time.perf_counter()
        prep = prepare_lr(read_scan(src), plans)
        t_prep = time.perf_counter() - t
        np.save(work / "lr.npy", prep.array)
        z, h, w = prep.array.shape
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
            f"LR {w}x{h}x{z} -> x{plans.scale}; {args.folds} fold(s), TTA {'on' if args.tta else 'off'}; "
            f"LR preprocessing {t_prep:.1f} s (not in the figures below)"
        )
        results = {}
        for mode in ("untiled", "tiled"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--work",
                str(work),
                "--tile-size",
                str(args.tile_size),
                "--folds",
                str(args.folds),
                "--device",
                args.device,
            ] + (["--tta"] if args.tta else [])
            subprocess.run(cmd, check=True)
            results[mode] = json.loads((work / f"{mode}.json").read_text(encoding="utf-8"))
            r = results[mode]
            gpu = f", GPU peak {r['gpu_peak_mb']:.0f} MiB" if r["gpu_peak_mb"] else ""
            print(
                f"{mode:<8} tile {r['tile_size']:>4} (margin {r['margin']}) forward {r['seconds']:7.1f} s   "
                f"peak RSS {r['peak_rss_mb']:7.0f} MiB (before forward {r['rss_before_mb']:.0f}){gpu}"
            )
        a, b = np.load(work / "sr_untiled.npy"), np.load(work / "sr_tiled.npy")
        rng = float(a.max() - a.min())
        diff = float(np.abs(a - b).max())
        print(
            f"tiled vs untiled: max abs difference {diff:.3g} = {diff / rng:.2e} of the intensity "
            f"range {rng:.3g} (bar < 1e-3); autocast {results['tiled']['autocast']}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one fold without TTA only")
    ap.add_argument("--size", type=int, default=None, help="large-slice run: N x N LR slices")
    ap.add_argument("--slices", type=int, default=24, help="slices of the --size volume")
    ap.add_argument("--tile-size", type=int, default=256, help="tile of the tiled --size run")
    ap.add_argument("--folds", type=int, default=1, help="--size: networks averaged")
    ap.add_argument("--tta", action="store_true", help="--size: 8-fold TTA")
    ap.add_argument("--device", default="cpu", help="--size: cpu or cuda")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if args.child:
        large_child(Path(args.work), args.child, args.tile_size, args.folds, args.tta, args.device)
        return
    if args.size:
        large(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plans = demo_plans(tmp / "work")
        src, dst = tmp / "lr.nii.gz", tmp / "out" / "lr.nii.gz"
        make_scan(src, plans)
        prep = prepare_lr(read_scan(src), plans)
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; EDSR "
            f"{plans.configuration('dsgan_edsr').sr['num_blocks']} blocks x "
            f"{plans.configuration('dsgan_edsr').sr['num_features']} features; LR "
            f"{prep.array.shape[2]}x{prep.array.shape[1]}x{prep.array.shape[0]} -> x{plans.scale}"
        )
        settings = [("1 fold, no TTA", 1, False)]
        if not args.quick:
            settings += [("1 fold, 8x TTA", 1, True), ("5 folds, no TTA", 5, False)]
        for label, folds, tta in settings:
            pred = SRPredictor(plans, networks(plans, folds), tta=tta)
            pred.predict_array(prep.array[:2])  # warm-up (oneDNN primitives)
            fwd = best_of(lambda pred=pred: pred.predict_array(prep.array), args.repeats)

            def total(pred=pred) -> None:
                write_scan(pred.predict_scan(read_scan(src)), dst)

            tot = best_of(total, args.repeats)
            out = sitk.ReadImage(str(dst))
            print(
                f"{label:<16} forward only {fwd:6.2f} s   total {tot:6.2f} s   "
                f"total/forward {tot / fwd:.2f}   output {out.GetSize()}"
            )
        print("bars (1 fold, no TTA): total <= 15 s, total/forward <= 1.5")


if __name__ == "__main__":
    main()
