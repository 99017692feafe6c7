"""Ctrl-C during training: takes effect at the end of the current iteration (so that the
saved state is consistent); a second Ctrl-C stops at once, without saving."""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)


class DeferredInterrupt:
    """A SIGINT handler that records the request (``requested``) instead of raising; the
    second one raises at once (``hard``). Installed before the loader workers start, which
    inherit it and keep producing."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.requested = False
        self.hard = False

    def install(self):
        """Install the handler (main thread only); returns the function that restores the
        previous one."""
        self.requested = False
        self.hard = False
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.requested:
                self.hard = True
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self.requested = True
            if self.announce:
                logger.warning("Ctrl-C: stopping after this iteration (again: at once)")

        signal.signal(signal.SIGINT, handler)

        def restore() -> None:
            if signal.getsignal(signal.SIGINT) is handler:
                signal.signal(signal.SIGINT, previous)

        return restore
