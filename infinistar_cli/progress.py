"""Rendering engine events on stderr: a rich progress display on a terminal, plain lines otherwise."""
from __future__ import annotations

import sys
from typing import Optional, TextIO

from engine.request import Event

STAGE_NAMES = {
    "load": "loading model",
    "segment": "segment",
    "encode_reference": "encoding the input",
    "encode_text": "encoding prompt",
    "sample": "sampling",
    "decode": "decoding",
    "write": "writing",
}


def _stage_label(event: Event) -> str:
    label = STAGE_NAMES.get(event.stage, event.stage)
    where = []
    if event.clip is not None:
        where.append(f"clip {event.clip + 1}")
    if event.scale is not None:
        where.append(f"scale {event.scale + 1}")
    if where:
        label += " (" + ", ".join(where) + ")"
    return label


class Reporter:
    """Receives engine events and CLI messages; everything goes to stderr (stdout is for results).

    quiet: nothing but errors. verbose: every event as a line in plain mode.
    """

    def __init__(
        self, *, quiet: bool = False, verbose: bool = False, stream: Optional[TextIO] = None,
        rich: Optional[bool] = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.rich = (not quiet) and (self.stream.isatty() if rich is None else rich)
        self.prefix = ""
        self._stage: Optional[str] = None
        self._progress = None
        self._tasks: dict[str, int] = {}  # stage -> rich task id
        self._totals: dict[int, int] = {}  # task id -> its last known total
        if self.rich:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(file=self.stream, force_terminal=True if rich else None)
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
            )

    def __enter__(self) -> "Reporter":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def message(self, text: str) -> None:
        """A status line (suppressed by --quiet)."""
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def begin_output(self, prefix: str) -> None:
        """Start a new output: `prefix` (e.g. "[2/5]") labels its progress."""
        self.prefix = prefix
        self._stage = None
        if self._progress is not None:
            for task in self._tasks.values():
                self._progress.remove_task(task)
            self._tasks.clear()
            self._totals.clear()

    def on_event(self, event: Event) -> None:
        """The engine's progress callback."""
        if self.quiet:
            return
        label = f"{self.prefix} {_stage_label(event)}".strip()
        if self._progress is not None:
            self._rich_event(event, label)
            return
        new_stage = event.stage != self._stage
        self._stage = event.stage
        if self.verbose:
            count = f" {event.done}/{event.total}" if event.total else ""
            note = f": {event.message}" if event.message else ""
            self.message(f"{label}{count}{note}")
        elif new_stage:
            total = f" ({event.total} steps)" if event.total and event.stage == "sample" else ""
            self.message(f"{self.prefix} {STAGE_NAMES.get(event.stage, event.stage)}{total}...".strip())

    def _rich_event(self, event: Event, label: str) -> None:
        progress = self._progress
        task = self._tasks.get(event.stage)
        if task is None:
            for other in self._tasks.values():  # a new stage means the earlier ones are over
                total = self._totals.get(other) or 1
                progress.update(other, total=total, completed=total)
            task = progress.add_task(label, total=event.total or None)
            self._tasks[event.stage] = task
        self._totals[task] = event.total
        progress.update(task, description=label, completed=event.done, total=event.total or None)
