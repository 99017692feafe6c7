"""Parallel map with a progress bar (processes; sequential when num_processes <= 1).

Workers ignore SIGINT: on Ctrl-C only the parent sees KeyboardInterrupt (one line from
the command, exit 130) and terminates the pool; no worker prints a traceback.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def map_progress(
    fn: Callable[[Any], Any], items: Sequence[Any], num_processes: int, desc: str
) -> list[Any]:
    """``[fn(x) for x in items]`` in ``num_processes`` processes, in order, with a tqdm bar."""
    items = list(items)
    disable = len(items) < 2
    if num_processes <= 1 or len(items) < 2:
        return [fn(x) for x in tqdm(items, desc=desc, disable=disable, leave=False)]
    ctx = mp.get_context("spawn")
    # workers are born with SIGINT ignored (an ignored signal stays ignored across exec, and
    # Python then installs no KeyboardInterrupt handler): a Ctrl-C during their start-up
    # cannot print a traceback either
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        pool = ctx.Pool(min(num_processes, len(items)), initializer=_ignore_sigint)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    with pool:
        it = pool.imap(fn, items)
        return list(tqdm(it, total=len(items), desc=desc, leave=False))
