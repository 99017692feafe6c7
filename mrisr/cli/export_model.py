"""``mrisr_export_model -d ID -c CONFIG -o model.zip``: a trained model as one shareable zip."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrisr.plans import DEFAULT_CONFIGURATION, DEFAULT_PLANS, DEFAULT_TRAINER
from mrisr.utilities.cli_support import run_command, setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mrisr_export_model",
        description="Pack a trained configuration (plans, dataset.json, fingerprint, the "
        "folds' checkpoints, degradation summaries, a README with the validation table) into "
        "a zip that mrisr_install_model installs on another machine.",
    )
    p.add_argument("-d", default=None, help="dataset id or name (default: the only trained one)")
    p.add_argument(
        "-c",
        default=None,
        help="configuration (default: the plans' default_configuration, chosen by the "
        f"selection rule, else {DEFAULT_CONFIGURATION})",
    )
    p.add_argument("-tr", default=DEFAULT_TRAINER, help=f"trainer (default {DEFAULT_TRAINER})")
    p.add_argument("-p", default=DEFAULT_PLANS, help=f"plans identifier (default {DEFAULT_PLANS})")
    p.add_argument(
        "-f", nargs="+", default=None, help="folds to export (default: every trained fold)"
    )
    p.add_argument(
        "-chk", default="final", choices=["final", "best"], help="checkpoint (default final)"
    )
    p.add_argument("-o", required=True, help="output zip file")
    args = p.parse_args(argv)
    setup_logging()

    def body() -> int:
        from mrisr.inference.export import export_model

        out = export_model(args.d, args.c, Path(args.o), args.tr, args.p, args.f, args.chk)
        print(f"exported: {out}")
        return 0

    return run_command("mrisr_export_model", body)


if __name__ == "__main__":
    raise SystemExit(main())
