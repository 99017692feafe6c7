"""Warm start against training from scratch, on the quality harness's held-out pairs.

For each demo protocol: ``dsgan_edsr`` (fold 0, the harness's 8 x 32 EDSR) trained from
scratch for 1200 iterations (``EDSRTrainer_quality``) and for 300, and for 300 iterations
started from a network trained on the *other* protocol (``mrisr_train -pretrained_weights``;
by default that protocol's ``EDSRTrainer_quality_long_fixed`` fold 0, 4800 iterations, from
``bench_early_stop.py``); each super-resolves the held-out real LR, scored against the
held-out HR. The bar (issue 31): warm-started training reaches the PSNR of 1200 iterations
from scratch in <= 300 iterations. The starting network here knows one other protocol of the
same anatomy, not the generic model the issue asks for: a lower bound on what that gives.

    python benchmarks/bench_warm_start.py --workdir /work/qwork
    python benchmarks/bench_warm_start.py --workdir /work/qwork --weights generic.pt

``--weights FILE`` starts both protocols from that file instead (the generic network of
``benchmarks/pretrain_generic_edsr.py``); its results are kept apart (``_weights`` files).

Shares ``--workdir`` with ``bench_quality.py`` / ``bench_early_stop.py`` (datasets, plans and
the DSGAN stage are reused); each protocol's result goes to
``<workdir>/warm_start_<protocol>.json`` as soon as it is done, and a re-run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_quality  # noqa: E402

from mrisr.training.trainer import TRAINERS  # noqa: E402
from mrisr.training.variants import EDSRTrainer_quality  # noqa: E402

CONFIG = "dsgan_edsr"


@TRAINERS.register
class EDSRTrainer_quality_300(EDSRTrainer_quality):
    """The harness's network for a quarter of its budget (300 iterations)."""

    iterations = 300
    checkpoint_every = 100
    validate_every = 100


@TRAINERS.register
class EDSRTrainer_quality_300_warm(EDSRTrainer_quality_300):
    """The same, started from another protocol's network (its own results folder)."""


RUNS = (
    ("scratch_1200", "EDSRTrainer_quality", False),
    ("scratch_300", "EDSRTrainer_quality_300", False),
    ("warm_300", "EDSRTrainer_quality_300_warm", True),
)


def source_weights(workdir: Path, protocol: str, trainer: str) -> Path:
    found = sorted(
        (workdir / bench_quality.slug(protocol) / "mrisr_results").glob(
            f"Dataset*/{trainer}__*__{CONFIG}/fold_0/checkpoint_final.pth"
        )
    )
    if not found:
        raise SystemExit(
            f"no {trainer} {CONFIG} fold 0 of protocol {protocol} under {workdir}: run "
            "benchmarks/bench_early_stop.py there first (or pass --source-trainer)"
        )
    return found[0]


@TRAINERS.register
class EDSRTrainer_quality_300_generic(EDSRTrainer_quality_300):
    """The same, started from a file of weights (``--weights``)."""


def run(protocol: str, source: str, args) -> dict:
    tag = "_weights" if args.weights else ""
    out = Path(args.workdir) / f"warm_start{tag}_{protocol}.json"
    if out.is_file():
        return json.loads(out.read_text())
    weights = (
        Path(args.weights).resolve()
        if args.weights
        else source_weights(Path(args.workdir), source, args.source_trainer)
    )
    result = {"protocol": protocol, "pretrained_from": str(weights), "runs": {}}
    runs = RUNS
    if args.weights:
        runs = (*RUNS[:2], ("warm_300", "EDSRTrainer_quality_300_generic", True))
    for label, trainer, warm in runs:
        bench_quality.TRAINER = trainer
        bench_quality.PRETRAINED_WEIGHTS = weights if warm else None
        bench_quality.FROM_SCRATCH = not warm
        t = time.time()
        r = bench_quality.run_protocol(protocol, args, ["bicubic", CONFIG])
        ev = r["evals"]
        mean = {
            c: {m: sum(v[m] for v in ev[c].values()) / len(ev[c]) for m in ("psnr", "ssim")}
            for c in ev
        }
        result["runs"][label] = {"trainer": trainer, "seconds": time.time() - t, **mean}
        print(label, protocol, json.dumps(mean), flush=True)
    out.write_text(json.dumps(result, indent=1))
    return result


def report(results: list[dict]) -> str:
    lines = [
        "| protocol | bicubic | scratch 1200 | scratch 300 | warm 300 | warm 300 - scratch 1200 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        runs = r["runs"]
        cell = {k: f"{v[CONFIG]['psnr']:.2f} / {v[CONFIG]['ssim']:.4f}" for k, v in runs.items()}
        bic = runs["scratch_1200"]["bicubic"]
        gap = runs["warm_300"][CONFIG]["psnr"] - runs["scratch_1200"][CONFIG]["psnr"]
        lines.append(
            f"| {r['protocol']} | {bic['psnr']:.2f} / {bic['ssim']:.4f} | {cell['scratch_1200']} "
            f"| {cell['scratch_300']} | {cell['warm_300']} | {gap:+.2f} dB |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocols", default="default,fermi_pf")
    p.add_argument("--source-trainer", default="EDSRTrainer_quality_long_fixed")
    p.add_argument("--weights", default=None, help="start from this file instead")
    p.add_argument("--test-pairs", type=int, default=4)
    p.add_argument("--folds", nargs="+", type=int, default=[0])
    p.add_argument("--workdir", default="quality_work")
    p.add_argument("--device", default="cpu")
    p.set_defaults(select=False)  # bench_quality.run_protocol's: no selection screen
    args = p.parse_args(argv)
    protocols = args.protocols.split(",")
    if args.weights:  # every protocol starts from the file
        results = [run(a, a, args) for a in protocols]
    elif len(protocols) != 2:
        raise SystemExit("--protocols: two protocols, each warm-started from the other")
    else:
        results = [run(a, b, args) for a, b in (protocols, protocols[::-1])]
    text = report(results)
    tag = "_weights" if args.weights else ""
    Path(args.workdir, f"warm_start{tag}_report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
