"""``mrisr_find_best_configuration [-d ID]``: the paper's comparison table from cross-validation."""

from __future__ import annotations

import argparse

from mrisr.plans import DEFAULT_PLANS, DEFAULT_TRAINER
from mrisr.utilities.cli_support import run_command, setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mrisr_find_best_configuration",
        description="Compare every trained configuration on its cross-validation cases "
        "(BRISQUE, SSIM, PSNR; paired t-tests) and draw the comparison figures.",
    )
    p.add_argument("-d", default=None, help="dataset id or name (default: the only trained one)")
    p.add_argument("-tr", default=DEFAULT_TRAINER, help="trainer whose results to compare")
    p.add_argument("-p", default=DEFAULT_PLANS, help="plans identifier")
    args = p.parse_args(argv)
    setup_logging()

    def body() -> int:
        from mrisr.evaluation.comparison import find_best_configuration
        from mrisr.paths import resolve_results_dataset

        dataset = resolve_results_dataset(args.d)
        report = find_best_configuration(dataset, args.tr, args.p)
        print(report["markdown"])
        print(f"\nbest configuration by PSNR: {report['best_configuration_by_psnr']}")
        for k, v in report["figures"].items():
            if v:
                print(f"figure ({k}): {v}")
        return 0

    return run_command("mrisr_find_best_configuration", body)


if __name__ == "__main__":
    raise SystemExit(main())
