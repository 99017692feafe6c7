"""``mrisr_install_model model.zip``: install an exported model into ``$mrisr_results``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrisr.utilities.cli_support import run_command, setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mrisr_install_model",
        description="Check and install a model zip written by mrisr_export_model into "
        "$mrisr_results; mrisr_predict -d ID then works without raw or preprocessed data.",
    )
    p.add_argument("zip", help="the model zip")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an installed model of the same name"
    )
    args = p.parse_args(argv)
    setup_logging()

    def body() -> int:
        from mrisr.inference.install import install_model

        folder = install_model(Path(args.zip), overwrite=args.overwrite)
        print(f"installed: {folder}")
        return 0

    return run_command("mrisr_install_model", body)


if __name__ == "__main__":
    raise SystemExit(main())
