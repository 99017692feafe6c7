"""``mrisr_demo``: the whole pipeline on the embedded demo dataset.

Stages, each a public mrisr command's API, each reusing what an earlier run finished (the
command can be re-run or resumed after an interruption):

1. build the demo dataset (MNI152 slabs, real low-resolution acquisitions);
2. ``mrisr_plan_and_preprocess -d 1 -pl DemoPlanner``;
3. ``mrisr_train 0 -d 1 -c CONFIG -tr EDSRTrainer_demo -p mrisrDemoPlans`` for every
   configuration (the degradation stage first: DSGAN kernels, DSN, fixed models);
4. ``mrisr_predict`` of the held-out real LR scans (``imagesLRTs``) with every
   configuration (fold 0, 8-fold test-time augmentation);
5. ``mrisr_evaluate`` of each against the held-out HR scans (``imagesHRTs``);
6. the comparison: the table on the held-out scans, and
   ``mrisr_find_best_configuration`` (fold-0 cross-validation table, Fig. 4 / Fig. 5-like
   figures, MSCN distances of each configuration's synthetic LR to real LR).

Everything lives under ``--workdir`` (default ``demo_work``): ``mrisr_raw``,
``mrisr_preprocessed``, ``mrisr_results``, ``predictions/<configuration>/`` and the report
``demo_report.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from mrisr.plans import Plans
from mrisr.utilities.cli_support import int_at_least, run_command, setup_logging
from mrisr.utilities.errors import MrisrError

logger = logging.getLogger(__name__)

DATASET_ID = 1
PLANNER = "DemoPlanner"
PLANS = "mrisrDemoPlans"
TRAINER = "EDSRTrainer_demo"
FOLD = 0
N_STAGES = 7
#: the through-plane stage's training budget (the iteration count fits the measured speed)
THROUGHPLANE_SECONDS = 60.0


def set_roots(workdir: Path) -> dict[str, Path]:
    roots = {k: workdir / k for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results")}
    from mrisr.utilities.file_io import make_dirs

    for k, p in roots.items():
        make_dirs(p)
        os.environ[k] = str(p)
    return roots


class _Stages:
    """Prints ``[i/N] title`` and the time each stage took."""

    def __init__(self) -> None:
        self.i, self.t0, self.start = 0, time.time(), time.time()

    def __call__(self, title: str) -> None:
        if self.i:
            print(f"      ({time.time() - self.t0:.0f} s)")
        self.i += 1
        self.t0 = time.time()
        print(f"[{self.i}/{N_STAGES}] {title}", flush=True)

    def done(self) -> None:
        print(f"      ({time.time() - self.t0:.0f} s)")
        print(f"demo finished in {time.time() - self.start:.0f} s")


def _trained(dataset: str, plans: Plans, config: str) -> bool:
    from mrisr.training.train_api import fold_folder, results_folder

    folder = fold_folder(results_folder(dataset, TRAINER, PLANS, config), FOLD)
    done = (folder / "validation" / "summary.json").is_file()
    if plans.configuration(config).requires_training:
        done = done and (folder / "checkpoint_final.pth").is_file()
    return done


def _train_all(dataset: str, plans: Plans, device: str) -> None:
    """Every configuration of the demo plans, in the plans' order (the planner's: the
    paper's method first, the fixed baselines after it)."""
    from mrisr.training.train_api import fold_folder, results_folder, run_training

    for config in plans.configuration_names:
        if _trained(dataset, plans, config):
            print(f"      {config}: trained and validated (reused)")
            continue
        t0 = time.time()
        folder = fold_folder(results_folder(dataset, TRAINER, PLANS, config), FOLD)
        resume = (folder / "checkpoint_latest.pth").is_file()
        summary = run_training(
            FOLD,
            dataset,
            config,
            TRAINER,
            PLANS,
            continue_training=resume,
            device=device,
        )
        mean = summary["mean"][config]
        print(
            f"      {config}: fold {FOLD} validation PSNR {mean['psnr']['mean']:.2f} dB, "
            f"SSIM {mean['ssim']['mean']:.4f} ({time.time() - t0:.0f} s"
            f"{', resumed' if resume else ''})",
            flush=True,
        )


def _predict_all(dataset: str, plans: Plans, raw: Path, predictions: Path, device: str) -> None:
    from mrisr.inference.predict_api import predict_folder

    for config in plans.configuration_names:
        out = predictions / config
        predict_folder(
            raw / "imagesLRTs",
            out,
            dataset,
            config,
            TRAINER,
            PLANS,
            folds=[str(FOLD)] if plans.configuration(config).requires_training else None,
            device=device,
            resume=True,
        )


def _evaluate_all(plans: Plans, raw: Path, predictions: Path) -> dict[str, dict]:
    from mrisr.evaluation.evaluate_api import evaluate_folders
    from mrisr.utilities.file_io import load_json

    results = {}
    for config in plans.configuration_names:
        pred = predictions / config
        out = pred / "evaluation.json"
        newest = max(p.stat().st_mtime for p in pred.glob("*.nii.gz"))
        if out.is_file() and out.stat().st_mtime >= newest:
            res = load_json(out)
        else:
            res = evaluate_folders(raw / "imagesHRTs", pred, out)
        results[config] = {c["case"]: c for c in res["cases"]}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mrisr_demo", description="mrisr_demo: the whole pipeline on the embedded demo dataset"
    )
    p.add_argument("--workdir", default="demo_work", help="where the demo keeps everything")
    p.add_argument(
        "-np", type=int_at_least(1), default=2, help="worker processes for preprocessing"
    )
    p.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda", "mps"), help="cpu, cuda or mps"
    )
    args = p.parse_args(argv)
    setup_logging()
    return run_command("mrisr_demo", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    """The demo's stages, one after another."""
    from mrisr.dataset.demo import build_demo_dataset
    from mrisr.evaluation.comparison import (
        columns_of,
        comparison_table,
        find_best_configuration,
        table_markdown,
    )
    from mrisr.planning.plan_and_preprocess_api import plan_and_preprocess, summary_text
    from mrisr.throughplane.demo_report import throughplane_demo
    from mrisr.utilities.devices import check_device
    from mrisr.utilities.file_io import atomic_path

    check_device(args.device)
    workdir = Path(args.workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
        raise MrisrError(f"--workdir {workdir}: is a file; choose a folder")
    roots = set_roots(workdir)
    predictions = workdir / "predictions"
    stage = _Stages()

    stage("building the demo dataset from the bundled MNI152 template")
    raw = build_demo_dataset(roots["mrisr_raw"], dataset_id=DATASET_ID)
    dataset = raw.name
    print(f"      {raw}")

    stage(f"mrisr_plan_and_preprocess -d {DATASET_ID} -pl {PLANNER}")
    verified, plans = plan_and_preprocess(dataset, args.np, planner=PLANNER)
    print(summary_text(dataset, verified, plans))

    stage(
        f"mrisr_train {FOLD} -d {DATASET_ID} -c CONFIG -tr {TRAINER} -p {PLANS} "
        f"(every configuration, degradation stage first)"
    )
    _train_all(dataset, plans, args.device)

    stage(
        f"mrisr_predict -i {raw / 'imagesLRTs'} -o {predictions}/CONFIG -d {DATASET_ID} "
        f"-c CONFIG -tr {TRAINER} -p {PLANS} -f {FOLD}"
    )
    _predict_all(dataset, plans, raw, predictions, args.device)

    stage(
        f"mrisr_evaluate -ref {raw / 'imagesHRTs'} -pred {predictions}/CONFIG "
        f"-o {predictions}/CONFIG/evaluation.json"
    )
    test = comparison_table(_evaluate_all(plans, raw, predictions), columns_of(plans))
    test_md = table_markdown(test, "held-out test scans (imagesLRTs vs imagesHRTs)")

    stage(f"mrisr_find_best_configuration -d {DATASET_ID} -tr {TRAINER} -p {PLANS}")
    report = find_best_configuration(dataset, TRAINER, PLANS)

    stage(
        "mrisr_throughplane -i DIR/throughplane/data/imagesLRTs/thick_000.nii.gz "
        f"-o DIR/throughplane/out --time-budget {THROUGHPLANE_SECONDS:.0f}s "
        "(a thick-slice scan: 3 mm slices, 0.6 mm gaps)"
    )
    tp_md = throughplane_demo(workdir, THROUGHPLANE_SECONDS)
    text = _report_text(dataset, test_md, report) + "\n" + tp_md
    with atomic_path(workdir / "demo_report.md") as tmp:
        tmp.write_text(text)
    stage.done()
    print()
    print(text)
    print(f"report: {workdir / 'demo_report.md'}")
    return 0


def _report_text(dataset: str, test_md: str, report: dict) -> str:
    """demo_report.md: the test table, the cross-validation table, the MSCN distances."""
    mscn = report["mscn_distance_to_real_lr"] or {}
    lines = [
        f"# mrisr demo: {dataset}",
        "",
        "## Held-out test scans",
        "",
        test_md,
        "",
        f"## Cross-validation (fold {FOLD} validation cases)",
        "",
        report["markdown"],
        "",
        "## Synthetic LR vs real LR (MSCN statistics, Jensen-Shannon divergence, lower = closer)",
        "",
        "| synthetic LR | MSCN | diagonal products | combined |",
        "|---|---|---|---|",
    ]
    for name, d in sorted(mscn.items(), key=lambda kv: kv[1]["combined"]):
        lines.append(f"| {name} | {d['mscn']:.4f} | {d['products']:.4f} | {d['combined']:.4f} |")
    lines += ["", "Figures:"]
    lines += [f"- {k}: {v}" for k, v in report["figures"].items() if v]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
