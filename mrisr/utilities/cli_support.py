"""What every command shares: one logging handler, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from mrisr.utilities.errors import MrisrError


class _CurrentStderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written, not the stream of
    the moment it was made (a caller that swaps ``sys.stderr`` -- a notebook cell, a test's
    capture -- must not leave it writing to a closed file)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("numexpr", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # nibabel attaches a stderr handler of its own at import (and propagates): its header
    # warnings printed twice, once to the stderr of the moment it was imported
    logging.getLogger("nibabel.global").handlers.clear()


#: how to resume each command after Ctrl-C
RESUME_HINTS = {
    "mrisr_train": "re-run it with --continue to resume from the latest checkpoint",
    "mrisr_predict": "re-run it with --continue to keep the finished scans",
    "mrisr_throughplane": "re-run it with --continue to keep the trained model and finished scans",
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
        _close_progress_bars()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(prog)
    except Exception as e:
        # Ctrl-C during an import surfaces wrapped (e.g. a RuntimeError from
        # __set_name__ whose cause is the KeyboardInterrupt): still an interrupt
        if not _caused_by_interrupt(e):
            raise
        return _interrupted(prog)


def _interrupted(prog: str) -> int:
    _close_progress_bars()
    hint = RESUME_HINTS.get(prog, "re-run the same command to resume")
    print(f"{prog}: interrupted; {hint}", file=sys.stderr)
    return 130


def _caused_by_interrupt(e: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in the exception's cause or context chain."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _close_progress_bars() -> None:
    """Close the progress bars an exception left open (their loop never finished), so that
    the one-line message starts on a line of its own, not after a bar."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half torn down by the exception: nothing more to clear
            pass
