"""``mrisr_evaluate -ref REF -pred PRED``: PSNR, SSIM and BRISQUE per case and mean +- sd."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrisr.utilities.cli_support import int_at_least, run_command, setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mrisr_evaluate",
        description="Compare super-resolved scans with reference HR scans of the same name, in "
        "physical space, on the reference's foreground: PSNR, SSIM, BRISQUE.",
    )
    p.add_argument("-ref", required=True, help="folder (or file) of reference HR scans")
    p.add_argument("-pred", required=True, help="folder (or file) of predictions, same file names")
    p.add_argument("-o", default=None, help="summary JSON (default: PRED/summary.json)")
    p.add_argument("-np", type=int_at_least(1), default=2, help="worker processes (default 2)")
    p.add_argument(
        "--no-registration",
        action="store_true",
        help="trust the headers: do not rigidly register each reference to its prediction",
    )
    args = p.parse_args(argv)
    setup_logging()

    def body() -> int:
        from mrisr.evaluation.evaluate_api import evaluate_folders, format_table

        pred = Path(args.pred)
        out = Path(args.o) if args.o else (pred / "summary.json" if pred.is_dir() else None)
        result = evaluate_folders(Path(args.ref), pred, out, args.np, not args.no_registration)
        print(format_table(result))
        if out:
            print(f"written: {out}")
        return 0

    return run_command("mrisr_evaluate", body)


if __name__ == "__main__":
    raise SystemExit(main())
