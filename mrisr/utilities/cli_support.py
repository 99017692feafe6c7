"""What every command shares: one logging handler, one-line errors, exit codes."""

from __future__ import annotations

import argparse
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


#: how to resume each command after Ctrl-C
RESUME_HINTS = {
    "mrisr_train": "re-run it with --continue to resume from the latest checkpoint",
    "mrisr_predict": "re-run it with --continue to keep the finished scans",
}


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (else argparse's one-line error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: must be >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body: user errors -> one line on stderr and exit 2; Ctrl-C -> 130."""
    try:
        return int(body() or 0)
    except MrisrError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(prog, "re-run the same command to resume")
        print(f"{prog}: interrupted; {hint}", file=sys.stderr)
        return 130
