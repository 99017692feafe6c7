"""Inference speed: one 128x128x72 real LR scan super-resolved to 256x256x72.

    python benchmarks/bench_predict.py            # 1 fold, no TTA (the bar) + 8x TTA + 5 folds
    python benchmarks/bench_predict.py --quick    # the bar only

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
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.imageio.sitk_io import read_scan, write_scan
from mrisr.inference.predictor import SRPredictor
from mrisr.networks.edsr import EDSR, edsr_init_args
from mrisr.planning.plans_handler import Plans
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one fold without TTA only")
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
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
