"""Run a command in a pseudo-terminal and read what a person would see, through the pyte
terminal emulator (cursor moves, line erases and all)."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from dataclasses import dataclass, field

import pyte

SPINNER = re.compile("[\u2800-\u28ff]")  # rich's "dots" spinner frames are braille characters


@dataclass
class TerminalRun:
    screen: list[str]  # the final screen, lines right-stripped, trailing blank lines dropped
    exit_code: int
    seen: set = field(default_factory=set)  # every line the screen showed at some moment


def run_on_terminal(argv: list[str], *, env: dict, cwd: str, cols: int = 120, rows: int = 60,
                    timeout: float = 300.0) -> TerminalRun:
    """Run `argv` with stdin, stdout and stderr on one pseudo-terminal of `cols` x `rows`."""
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's size must be known before the program asks
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.chdir(cwd)
        os.execvpe(argv[0], argv, {**env, "COLUMNS": str(cols), "LINES": str(rows)})
    seen: set = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            stream.feed(data)
            seen.update(line.rstrip() for line in screen.display)
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return TerminalRun(lines, os.waitstatus_to_exitcode(status), seen)
