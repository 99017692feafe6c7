"""Train the generic starting network: one EDSR carried through the demo's protocol family.

Each protocol of ``--protocols`` (default ``random:0-5``, development seeds: other filters,
ratios, contrasts, noise maps, grids and anatomy; ``mrisr.dataset.demo_protocol_family``)
builds a demo dataset, plans and preprocesses it (bench_quality's harness) and trains the
``oracle_edsr`` configuration (HR through the simulator's own acquisition, plus the real
LR's measured noise: what a perfect degradation model would give) for ``--trainer``'s
budget, starting from the previous protocol's network (``-pretrained_weights``). The last
network's weights are written to ``--out`` (a state dict, loaded weights-only) with the
recipe beside it (``.json``: protocols, trainer, scale, per-protocol held-out PSNR, a hash
of the training scans).

    python benchmarks/pretrain_generic_edsr.py --workdir DIR --out DIR/edsr_generic_8x32.pt
    python benchmarks/pretrain_generic_edsr.py --protocols random:4,random:8,random:15,random:25,random:26 \
        --start-from mrisr/networks/pretrained/edsr_generic_8x32.pt --out DIR/edsr_generic_8x32_x3.pt

Then ``mrisr_train ... -pretrained_weights DIR/edsr_generic_8x32.pt`` fine-tunes it
(``benchmarks/bench_warm_start.py --weights`` measures what it is worth).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_quality  # noqa: E402

from mrisr.dataset.demo_protocol_family import expand  # noqa: E402

CONFIG = "oracle_edsr"


def scans_hash(work: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((work / "mrisr_raw").rglob("*.nii.gz")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocols", default="random:0-5")
    p.add_argument("--trainer", default="EDSRTrainer_quality")
    p.add_argument("--workdir", default="pretrain_work")
    p.add_argument("--out", required=True)
    p.add_argument("--test-pairs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--start-from",
        default=None,
        help="weights the first protocol starts from (e.g. the x2 generic network for an x3 "
        "one: its body carries over, the upsampler of another scale starts afresh); default "
        "random weights",
    )
    args = p.parse_args(argv)
    args.folds, args.select = [0], False
    import torch

    bench_quality.TRAINER = args.trainer
    bench_quality.FROM_SCRATCH = True  # the first protocol; each next starts from the last
    previous = Path(args.start_from).resolve() if args.start_from else None
    recipe = {"trainer": args.trainer, "configuration": CONFIG, "protocols": []}
    if previous is not None:
        recipe["started_from"] = previous.name
    for protocol in expand(args.protocols):
        t = time.time()
        bench_quality.PRETRAINED_WEIGHTS = previous
        r = bench_quality.run_protocol(protocol, args, [CONFIG])
        work = Path(args.workdir).resolve() / bench_quality.slug(protocol)
        previous = next(
            (work / "mrisr_results").glob(
                f"Dataset*/{args.trainer}__*__{CONFIG}/fold_0/checkpoint_final.pth"
            )
        )
        state = torch.load(previous, weights_only=True)
        ev = r["evals"][CONFIG]
        recipe["protocols"].append(
            {
                "protocol": protocol,
                "scale": state["network_args"]["scale"],
                "held_out_psnr": sum(v["psnr"] for v in ev.values()) / len(ev),
                "scans_sha256": scans_hash(work),
                "seconds": round(time.time() - t),
            }
        )
        print(json.dumps(recipe["protocols"][-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state["network"], out)
    recipe.update(network_class=state["network_class"], network_args=state["network_args"])
    out.with_suffix(".json").write_text(json.dumps(recipe, indent=1) + "\n")
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
