"""The default plan, timed end to end: what a new user's few commands cost and give.

On one demo protocol (the quality harness's dataset: 6 training pairs, 4 held-out pairs), as
a user would run it, each command through its CLI:

1. ``mrisr_plan_and_preprocess -d 1 -pl DemoPlanner --time-budget T`` (plans, preprocessing,
   the selection rule's screen of every configuration, the budget);
2. ``mrisr_train 0 -d 1 -p mrisrDemoPlans -c C`` for each configuration the plans mark worth
   training (``EDSRTrainer``: the planned network fitted to the budget, early stopping on);
3. ``mrisr_predict`` of the held-out real LR with the plans' default (fold 0, TTA) and
   ``mrisr_evaluate`` against the held-out HR; bicubic beside it.

Prints the wall time of each step and in all, and the held-out PSNR / SSIM (issue bar: the
whole plan within 45 minutes on a 2-core CPU, at >= the quality harness's ``dsgan_edsr``
row in ``documentation/degradation.md``).

    python benchmarks/bench_default_plan.py --protocol default --time-budget 15m
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PLANS = "mrisrDemoPlans"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="default")
    p.add_argument("--time-budget", default="15m", help="per configuration and fold")
    p.add_argument("--test-pairs", type=int, default=4)
    p.add_argument("--workdir", default="default_plan_work")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
        (work / k).mkdir(parents=True, exist_ok=True)
        os.environ[k] = str(work / k)
    from mrisr.cli.plan_and_preprocess import main as plan_main
    from mrisr.cli.predict import main as predict_main
    from mrisr.cli.train import main as train_main
    from mrisr.dataset.demo import build_demo_dataset
    from mrisr.evaluation.evaluate_api import evaluate_folders
    from mrisr.training.train_api import load_plans

    raw = build_demo_dataset(
        work / "mrisr_raw", 1, num_test_pairs=args.test_pairs, protocol=args.protocol
    )
    steps, t_all = {}, time.time()
    t = time.time()
    budget = ["--time-budget", args.time_budget] if args.time_budget else []
    assert plan_main(["-d", "1", "-pl", "DemoPlanner", "--no-time-estimate", *budget]) == 0
    steps["plan, preprocess, select"] = time.time() - t
    plans = load_plans(raw.name, PLANS)
    for config in plans.worth_training:
        t = time.time()
        assert train_main(["0", "-d", "1", "-p", PLANS, "-c", config]) == 0
        steps[f"mrisr_train 0 -c {config}"] = time.time() - t
    t = time.time()
    out = work / "predictions" / plans.default_configuration
    assert (
        predict_main(["-i", str(raw / "imagesLRTs"), "-o", str(out), "-d", "1", "-p", PLANS]) == 0
    )
    steps["mrisr_predict (default)"] = time.time() - t
    total = time.time() - t_all
    res = evaluate_folders(raw / "imagesHRTs", out, out / "evaluation.json")
    bic_out = work / "predictions" / "bicubic"
    predict_main(
        ["-i", str(raw / "imagesLRTs"), "-o", str(bic_out), "-d", "1", "-p", PLANS, "-c", "bicubic"]
    )
    bic = evaluate_folders(raw / "imagesHRTs", bic_out, bic_out / "evaluation.json")
    report = {
        "protocol": args.protocol,
        "time_budget": args.time_budget,
        "default_configuration": plans.default_configuration,
        "worth_training": plans.worth_training,
        "selection_reason": plans.data.get("selection", {}).get("reason"),
        "time_budget_decisions": plans.data["decisions"].get("time_budget"),
        "steps_s": steps,
        "total_s": total,
        "psnr": res["mean"]["psnr"]["mean"],
        "ssim": res["mean"]["ssim"]["mean"],
        "bicubic_psnr": bic["mean"]["psnr"]["mean"],
        "bicubic_ssim": bic["mean"]["ssim"]["mean"],
    }
    for k, v in steps.items():
        print(f"  {k:<40} {v / 60:6.1f} min")
    print(f"  {'in all':<40} {total / 60:6.1f} min")
    print(
        f"  held-out: {report['default_configuration']} PSNR {report['psnr']:.2f} SSIM "
        f"{report['ssim']:.4f}; bicubic {report['bicubic_psnr']:.2f} / {report['bicubic_ssim']:.4f}"
    )
    (work / "default_plan_report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
