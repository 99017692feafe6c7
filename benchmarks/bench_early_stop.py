"""Early stopping against the fixed budget, on the quality harness's held-out pairs.

For each demo protocol: ``dsgan_edsr`` trained (fold 0) by ``EDSRTrainer_quality_long``
(the harness's network, 4800 iterations as a ceiling, early stopping on) and by
``EDSRTrainer_quality_long_fixed`` (the same 4800 iterations in full, validated as often),
then both super-resolve the held-out real LR and are scored against the held-out HR. The
bar (issue 31): early stopping stops within the budget on a plateau and costs <= 0.1 dB.

    python benchmarks/bench_early_stop.py                    # both protocols
    python benchmarks/bench_early_stop.py --protocols default

Shares ``--workdir`` with ``bench_quality.py`` (datasets, plans and the DSGAN stage are
reused); each protocol's result is written to ``<workdir>/early_stop_<protocol>.json`` as
soon as it is done, and a re-run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_quality  # noqa: E402

TRAINERS = ("EDSRTrainer_quality_long", "EDSRTrainer_quality_long_fixed")
CONFIG = "dsgan_edsr"


def _fold_record(work: Path, trainer: str) -> dict:
    import torch

    folder = next((work / "mrisr_results").glob(f"Dataset*/{trainer}__*__{CONFIG}/fold_0"))
    state = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    h = state["history"]
    return {
        "iterations": int(state["iteration"]),
        "ceiling": int(state["total_iterations"]),
        "early_stopping": state.get("early_stopping"),
        "val_iteration": h["val_iteration"],
        "val_psnr": [round(v, 3) for v in h["val_psnr"]],
        "seconds_per_iteration": sum(h["seconds_per_iteration"])
        / max(1, len(h["seconds_per_iteration"])),
    }


def run(protocol: str, args) -> dict:
    out = Path(args.workdir) / f"early_stop_{protocol}.json"
    if out.is_file():
        return json.loads(out.read_text())
    result = {"protocol": protocol, "trainers": {}}
    for trainer in TRAINERS:
        bench_quality.TRAINER = trainer
        t = time.time()
        r = bench_quality.run_protocol(protocol, args, ["bicubic", CONFIG])
        ev = r["evals"]
        psnr = {c: sum(v["psnr"] for v in ev[c].values()) / len(ev[c]) for c in ev}
        ssim = {c: sum(v["ssim"] for v in ev[c].values()) / len(ev[c]) for c in ev}
        rec = _fold_record(Path(args.workdir).resolve() / protocol, trainer)
        rec.update(
            psnr=psnr[CONFIG],
            ssim=ssim[CONFIG],
            bicubic_psnr=psnr["bicubic"],
            seconds=r["timings"][CONFIG],
            wall=time.time() - t,
        )
        result["trainers"][trainer] = rec
        print(
            f"  {protocol}/{trainer}: {json.dumps({k: rec[k] for k in ('iterations', 'psnr', 'ssim', 'seconds')})}",
            flush=True,
        )
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def report(results: list[dict]) -> str:
    es, fixed = TRAINERS
    rows = [
        "| protocol | iterations (early stop / ceiling) | stopped at | LR drops at | held-out PSNR early stop | fixed 4800 | difference | SSIM early stop / fixed | training time early stop / fixed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a, b = r["trainers"][es], r["trainers"][fixed]
        e = a["early_stopping"] or {}
        rows.append(
            f"| {r['protocol']} | {a['iterations']} / {a['ceiling']} | {e.get('stopped_at')} | "
            f"{e.get('drops')} | {a['psnr']:.2f} | {b['psnr']:.2f} | {a['psnr'] - b['psnr']:+.2f} | "
            f"{a['ssim']:.4f} / {b['ssim']:.4f} | {a['seconds']:.0f} s / {b['seconds']:.0f} s |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocols", default="default,fermi_pf")
    p.add_argument("--folds", nargs="+", type=int, default=[0])
    p.add_argument("--test-pairs", type=int, default=4)
    p.add_argument("--workdir", default="quality_work")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    results = [run(protocol, args) for protocol in args.protocols.split(",")]
    text = report(results)
    print(text)
    Path(args.workdir, "early_stop_report.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
