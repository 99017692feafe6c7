"""``mrisr_train FOLD``: train and validate one fold of one configuration.

Examples::

    mrisr_train 0                              # the only dataset, dsgan_edsr
    mrisr_train 3 -d 1 -c gaussian_edsr
    mrisr_train all -tr EDSRTrainer_2000iters --device cpu
    mrisr_train 0 --continue                   # after a crash or Ctrl-C
    mrisr_train 0 --val-only
    mrisr_train 0 --device cuda --num-gpus 4   # DDP on four GPUs of this machine
    torchrun --nproc-per-node 8 --nnodes 2 ... -m mrisr.cli.train 0 --device cuda
"""

from __future__ import annotations

import argparse
import math

from mrisr.plans import DEFAULT_CONFIGURATION, DEFAULT_PLANS, DEFAULT_TRAINER
from mrisr.utilities.cli_support import int_at_least, run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mrisr_train",
        description="Train the SR network of a configuration on one cross-validation fold "
        "(making the configuration's synthetic training LR first if needed), then validate "
        "it on the fold's real LR scans against their HR.",
        epilog="Trainers: EDSRTrainer (as planned) and variants such as EDSRTrainer_2000iters, "
        "EDSRTrainer_demo, EDSRTrainer_tiny; an unknown name lists them all.",
    )
    p.add_argument("fold", help="fold 0..4 (fewer with fewer than five pairs) or 'all'")
    p.add_argument("-d", metavar="ID", help="dataset id or name (default: the only one)")
    p.add_argument(
        "-c",
        default=None,
        metavar="CONFIG",
        help="configuration in the plans (default: the plans' default_configuration, chosen "
        f"by mrisr_plan_and_preprocess's selection rule, else {DEFAULT_CONFIGURATION}; "
        "bicubic only validates)",
    )
    p.add_argument("-tr", default=DEFAULT_TRAINER, metavar="TRAINER", help="trainer class")
    p.add_argument("-p", default=DEFAULT_PLANS, metavar="PLANS", help="plans name")
    p.add_argument(
        "--continue",
        dest="continue_training",
        action="store_true",
        help="resume from checkpoint_latest.pth",
    )
    p.add_argument(
        "-pretrained_weights",
        "--pretrained-weights",
        dest="pretrained_weights",
        default=None,
        metavar="FILE",
        help="start a new training from these weights (an mrisr checkpoint, e.g. another "
        "dataset's fold, or a state dict), or 'generic': the network shipped with mrisr "
        "(8 x 32 EDSR trained on the demo's protocol family); every tensor whose name and "
        "shape match is loaded, the rest (an upsampler of another scale) keeps its "
        "initialisation",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="start from random weights, whatever the plans' initialisation (by default a "
        "new training fine-tunes the generic network shipped with mrisr where one of its "
        "size exists)",
    )
    p.add_argument("--val-only", action="store_true", help="only validate checkpoint_final.pth")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.add_argument(
        "--num-gpus",
        type=int_at_least(1),
        default=1,
        metavar="N",
        help="DDP processes on this machine",
    )
    p.add_argument(
        "-nw",
        "--num-workers",
        type=int_at_least(0),
        default=None,
        metavar="N",
        help="data loader processes (0: load in the training process; default: by device)",
    )
    p.add_argument(
        "--disable-tta", action="store_true", help="validate without test-time augmentation"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="arithmetic of the network (auto: the fastest this device computes natively, "
        "measured once per machine and network; weights stay float32)",
    )
    p.add_argument(
        "--no-early-stop", action="store_true", help="train the planned iterations in full"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _fmt(m: dict) -> str:
    p, s = m["psnr"], m["ssim"]
    if not math.isfinite(p["mean"]):
        return "n/a"
    return f"PSNR {p['mean']:.2f} ± {p['sd']:.2f} dB   SSIM {s['mean']:.4f} ± {s['sd']:.4f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from mrisr.training.train_api import run_training

        summary = run_training(
            args.fold,
            dataset=args.d,
            configuration=args.c,
            trainer=args.tr,
            plans_name=args.p,
            continue_training=args.continue_training,
            val_only=args.val_only,
            device=args.device,
            num_gpus=args.num_gpus,
            num_workers=args.num_workers,
            tta=False if args.disable_tta else None,
            precision=args.precision,
            early_stopping=not args.no_early_stop,
            pretrained_weights=args.pretrained_weights,
            from_scratch=args.from_scratch,
        )
        if summary is None:
            return 0
        config = summary["configuration"]
        held = "" if summary["held_out"] else "  (fold 'all': not held out)"
        print(
            f"{summary['dataset']} | {config} | {summary['trainer']} | fold {summary['fold']}: "
            f"{summary['num_cases']} validation pair(s){held}"
        )
        for m in dict.fromkeys([config, *summary["mean"]]):  # then the baseline it computed
            print(f"  {m:<16} {_fmt(summary['mean'][m])}")
        return 0

    return run_command("mrisr_train", body)


if __name__ == "__main__":
    raise SystemExit(main())
