"""SIGINT and SIGTERM: stop cleanly at any point, with exit status 128 + the signal's number.

While a command runs, the first signal raises `Interrupted` (a KeyboardInterrupt, so every
`except BaseException: clean up; raise` in the engine removes its temp files) and later ones are
only recorded, so that the clean-up itself is not cut short.

When the command owns the process (the console script), the process ends with `end_process`
right after the command: streams flushed, then os._exit. Interpreter shut-down (torch's teardown
alone takes a second) is where a late signal used to land: raised inside atexit callbacks
("Exception ignored in atexit callback", exit status 0) or met by the default handlers Python
restores at the very end (killed by SIGINT). Outputs are complete or removed by then: every
file is published or discarded before the command returns.
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))
NAMES = {getattr(signal, "SIGINT", -1): "interrupted", getattr(signal, "SIGTERM", -1): "terminated"}


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum


_received: Optional[int] = None


def received() -> Optional[int]:
    """The first signal received while a command ran, if any."""
    return _received


def describe(error: BaseException) -> str:
    """The one-line message: "interrupted" (SIGINT, Ctrl-C) or "terminated" (SIGTERM)."""
    return str(error) if isinstance(error, Interrupted) else "interrupted"


def exit_status(error: BaseException) -> int:
    """128 + the signal's number (130 for a plain KeyboardInterrupt, i.e. Ctrl-C)."""
    return 128 + getattr(error, "signum", getattr(signal, "SIGINT", 2))


def _raise_first(signum: int, frame: object) -> None:
    global _received
    if _received is None:
        _received = signum
        raise Interrupted(signum)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more to say anyway
            pass


def _exit_now(signum: int, frame: object) -> None:
    _flush()
    os._exit(128 + signum)


def end_process(code: object) -> None:
    """End the process now with `sys.exit(code)`'s status, or 128 + a signal received meanwhile."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    late = _received
    _flush()
    os._exit(128 + late if late and not code else (code or 0))


@contextmanager
def handled(owns_process: bool) -> Iterator[None]:
    """Install the handlers for a command. `owns_process`: the command is the whole process
    (the console script), so the shut-down handler stays until exit; otherwise (tests, embedding)
    the previous handlers come back afterwards."""
    global _received
    _received = None
    try:
        previous = {signum: signal.signal(signum, _raise_first) for signum in SIGNALS}
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if owns_process:
                signal.signal(signum, _exit_now)
            elif handler is not None:
                signal.signal(signum, handler)
