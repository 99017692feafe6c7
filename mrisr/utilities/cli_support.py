"""What every command shares: one logging handler, one-line errors, exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from mrisr.utilities.errors import MrisrError


def setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("numexpr", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body: user errors -> one line on stderr and exit 2; Ctrl-C -> 130."""
    try:
        return int(body() or 0)
    except MrisrError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; re-run the same command to resume (mrisr_train: add --continue)",
            file=sys.stderr,
        )
        return 130
