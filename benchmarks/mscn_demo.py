"""MSCN distance of each degradation's synthetic LR to real LR on the demo dataset (paper Fig. 5).

    python benchmarks/mscn_demo.py [--workdir DIR] [--dsgan-iterations N]

Builds the demo dataset (reused if present), plans and preprocesses it, makes synthetic LR
of every pair's HR with DSGAN (learned, per the plans), Gaussian (fitted sigma), k-space
zero-filling and bicubic decimation, and compares each with the pair's real LR (on the
working grid, NLM-denoised as the DSGAN sees it) over the real LR's foreground. Prints the
Jensen-Shannon distances (lower = closer to real LR) and writes a Fig. 5-like PNG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mrisr.cli.demo import set_roots
from mrisr.dataset.demo import build_demo_dataset
from mrisr.degradation.base import build_degradation
from mrisr.degradation.stage import ensure_synthetic_lr
from mrisr.metrics.mscn import mscn_distance, mscn_histograms, save_mscn_figure
from mrisr.planning.plan_and_preprocess_api import plan_and_preprocess
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.utilities.cli_support import setup_logging
from mrisr.utilities.file_io import save_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="demo_work")
    ap.add_argument("--dsgan-iterations", type=int, default=None, help="default: the plans' 3000")
    args = ap.parse_args()
    setup_logging()
    roots = set_roots(Path(args.workdir).resolve())
    ds_dir = build_demo_dataset(roots["mrisr_raw"])
    _, plans = plan_and_preprocess(ds_dir.name, 2)
    if args.dsgan_iterations:
        deg = plans.data["configurations"]["dsgan_edsr"]["degradation"]
        it = args.dsgan_iterations
        deg["iterations"] = it
        deg["lr_decay_iterations"] = [it // 4, it // 2, 3 * it // 4]
    ds = PreprocessedDataset.for_plans(plans)
    pairs = ds.pairs()
    masks = [ds.load(c, "lr_mask").astype(bool) for c in pairs]
    sets = {"real LR": mscn_histograms([ds.load(c, "lr") for c in pairs], mask=masks)}
    timings = {}
    for label, config in (
        ("DSGAN", "dsgan_edsr"),
        ("Gaussian", "gaussian_edsr"),
        ("zero-fill", "zerofill_edsr"),
    ):
        t0 = time.time()
        files = ensure_synthetic_lr(plans, config, ds.cases)
        timings[label] = time.time() - t0
        sets[label] = mscn_histograms([storage.load_array(files[c]) for c in pairs], mask=masks)
    bic = build_degradation({"name": "bicubic"}, plans.scale)
    sets["bicubic"] = mscn_histograms([bic.degrade(ds.load(c, "hr")) for c in pairs], mask=masks)
    out = Path(args.workdir) / "mscn"
    save_mscn_figure(
        sets, out / "mscn_fig5.png", title="MSCN statistics, demo dataset", reference="real LR"
    )
    rows = {n: mscn_distance(sets["real LR"], h) for n, h in sets.items() if n != "real LR"}
    save_json({"distances": rows, "seconds": timings, "pairs": pairs}, out / "mscn_distances.json")
    print(f"{'synthetic LR':<12} {'MSCN JS':>9} {'products JS':>12} {'combined':>9}")
    for n, r in sorted(rows.items(), key=lambda kv: kv[1]["combined"]):
        print(f"{n:<12} {r['mscn']:>9.4f} {r['products']:>12.4f} {r['combined']:>9.4f}")
    best = min(rows, key=lambda n: rows[n]["combined"])
    print(f"closest to real LR: {best}   (figure: {out / 'mscn_fig5.png'})")
    print("seconds to make synthetic LR:", {k: round(v, 1) for k, v in timings.items()})


if __name__ == "__main__":
    main()
