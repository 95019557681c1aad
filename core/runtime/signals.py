"""SIGTERM handled as Ctrl-C is: every ``except BaseException`` / ``finally`` cleanup runs.

Python turns SIGINT into KeyboardInterrupt, so an interrupted write removes its temporaries
(``weights.atomic_write``, ``record.SampleOutput.abort``, a staging folder's ``rmtree``). By
default SIGTERM (``kill``, a job scheduler's timeout, ``docker stop``) ends the process at
once and leaves them behind. Inside ``terminate_as_interrupt`` it raises ``Terminated``, a
KeyboardInterrupt, so the same paths run; the CLI then exits 143 (128 + SIGTERM) with one
line. Only the main thread installs it (Python's rule for signal handlers). Contract wing:
no torch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind (cleaning up) as for Ctrl-C."""


_received = False


def terminated() -> bool:
    """True once SIGTERM arrived inside ``terminate_as_interrupt`` (click turns the interrupt into Abort)."""
    return _received


def _raise(signum: int, frame: Any) -> None:
    global _received
    _received = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during cleanup ends the process
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated``; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
