"""The live region on a terminal: an overall bar for a batch, the current output's title and
one stage line that is replaced as stages change. Transient: when it stops, it leaves nothing
behind but the lines printed above it (messages and one summary per output).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Optional, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

BAR_WIDTH = 32
REFRESH_PER_SECOND = 8


def clock(seconds: Optional[float]) -> str:
    """0:01:05 for 65 s; -:--:-- when unknown."""
    if seconds is None:
        return "-:--:--"
    whole = int(max(seconds, 0) + 0.5)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class LiveDisplay:
    """State of the live region and its rendering; `Reporter` drives it."""

    def __init__(self, stream: TextIO, force_terminal: bool = False) -> None:
        self.console = Console(file=stream, force_terminal=force_terminal or None, highlight=False)
        self._spinner = Spinner("dots")
        self.batch_total = 0
        self.batch_done = 0
        self.batch_start: Optional[float] = None
        self.heading = ""
        self.stage_label = ""
        self.stage_done = 0
        self.stage_total = 0
        self.stage_start = time.monotonic()
        self._live = Live(console=self.console, get_renderable=self._render, transient=True,
                          refresh_per_second=REFRESH_PER_SECOND, redirect_stdout=False, redirect_stderr=False)

    def start(self) -> None:
        self._live.vertical_overflow = "ellipsis"
        self._live.start(refresh=True)

    def stop(self) -> None:
        self._live.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The region is erased while the body writes elsewhere on the terminal (stdout), then redrawn."""
        running = self._live.is_started
        if running:
            self._live.stop()
        try:
            yield
        finally:
            if running:
                self.start()

    def print(self, text: str) -> None:
        """A permanent line above the region (soft-wrapped, so long paths stay whole when copied)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def begin_batch(self, count: int) -> None:
        self.batch_total, self.batch_done, self.batch_start = count, 0, time.monotonic()

    def begin_output(self, heading: str) -> None:
        self.heading = heading
        self.stage_label, self.stage_done, self.stage_total = "", 0, 0
        self._live.refresh()

    def finish_output(self) -> None:
        self.batch_done += 1
        self.heading, self.stage_label = "", ""

    def stage(self, label: str, done: int, total: int, new: bool) -> None:
        if new:
            self.stage_start = time.monotonic()
        self.stage_label, self.stage_done, self.stage_total = label, done, total
        if new:
            self._live.refresh()

    def eta(self, now: float) -> Optional[float]:
        """Remaining time of the batch from the mean time of the outputs done so far."""
        if not self.batch_done or self.batch_start is None:
            return None
        return (now - self.batch_start) / self.batch_done * (self.batch_total - self.batch_done)

    def _render(self) -> Group:
        now = time.monotonic()
        rows = []
        if self.batch_total > 1:
            number = min(self.batch_done + 1, self.batch_total)
            grid = Table.grid(padding=(0, 1))
            grid.add_column(no_wrap=True)
            grid.add_column(width=BAR_WIDTH)
            grid.add_column(no_wrap=True)
            elapsed = now - (self.batch_start or now)
            grid.add_row(Text(f"[{number}/{self.batch_total}]", style="bold"),
                         ProgressBar(total=self.batch_total, completed=self.batch_done, width=BAR_WIDTH),
                         Text(f"{self.batch_done}/{self.batch_total} done  {clock(elapsed)} elapsed  "
                              f"ETA {clock(self.eta(now))}"))
            rows.append(grid)
        if self.heading:
            rows.append(Text(self.heading, no_wrap=True, overflow="ellipsis"))
        if self.stage_label:
            grid = Table.grid(padding=(0, 1))
            grid.add_column(no_wrap=True, width=1)
            grid.add_column(no_wrap=True, overflow="ellipsis", min_width=12)
            grid.add_column(width=BAR_WIDTH)
            grid.add_column(no_wrap=True)
            total = self.stage_total if self.stage_total > 1 else 0  # 0/1 .. 1/1 says nothing a spinner doesn't
            bar = ProgressBar(total=total, completed=self.stage_done, width=BAR_WIDTH) if total else Text("")
            count = f"{self.stage_done}/{total}  " if total else ""
            grid.add_row(self._spinner, Text(self.stage_label), bar, Text(f"{count}{clock(now - self.stage_start)}"))
            rows.append(grid)
        return Group(*rows)
