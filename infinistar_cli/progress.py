"""Rendering engine events on stderr: one live region on a terminal, plain lines otherwise.

Plain mode (stderr not a terminal, `CI` or `NO_COLOR` set, `TERM=dumb`) writes one line per stage
and message, stable for scripts and logs. On a terminal a single live region (infinistar_cli.live)
shows the current stage, replaced as stages change, and for a batch an overall bar; finished
outputs leave one summary line each, and results for stdout are printed outside the region.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, TextIO

from engine import Event

STAGE_NAMES = {
    "load": "loading model",
    "segment": "segment",
    "encode_reference": "encoding the input",
    "encode_text": "encoding prompt",
    "sample": "sampling",
    "decode": "decoding",
    "write": "writing",
}
DONE_MARK = "✓"


def stage_label(event: Event) -> str:
    label = STAGE_NAMES.get(event.stage, event.stage)
    where = []
    if event.clip is not None:
        where.append(f"clip {event.clip + 1}")
    if event.scale is not None:
        where.append(f"scale {event.scale + 1}")
    if where:
        label += " (" + ", ".join(where) + ")"
    return label


def wants_live(stream: TextIO, environ: Optional[dict] = None) -> bool:
    """A live display only for a person at a terminal: not in CI, not with NO_COLOR or TERM=dumb."""
    environ = os.environ if environ is None else environ
    if environ.get("CI") or "NO_COLOR" in environ or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Reporter:
    """Receives engine events and CLI messages; everything goes to `stream` (stderr) except
    `result()` lines, which go to stdout.

    quiet: nothing but errors and results. verbose: every event as a line in plain mode.
    rich: force the live display on (True) or off (False); None decides from the terminal.
    """

    def __init__(
        self, *, quiet: bool = False, verbose: bool = False, stream: Optional[TextIO] = None,
        rich: Optional[bool] = None, stdout: Optional[TextIO] = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.stdout = stdout
        self.quiet = quiet
        self.verbose = verbose
        self.rich = (not quiet) and (wants_live(self.stream) if rich is None else rich)
        self.prefix = ""
        self._stage: Optional[str] = None
        self.live = None
        if self.rich:
            from infinistar_cli.live import LiveDisplay

            self.live = LiveDisplay(self.stream, force_terminal=bool(rich))

    def __enter__(self) -> "Reporter":
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()

    def message(self, text: str) -> None:
        """A permanent status line (suppressed by --quiet)."""
        if self.quiet:
            return
        if self.live is not None:
            self.live.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def result(self, text: str) -> None:
        """A line for stdout (a written path, a JSON record): never drawn over by the live region."""
        stdout = self.stdout if self.stdout is not None else sys.stdout
        if self.live is not None:
            with self.live.paused():
                print(text, file=stdout, flush=True)
        else:
            print(text, file=stdout, flush=True)

    def begin_batch(self, count: int) -> None:
        """`count` outputs follow; above one, the live display shows an overall bar with an ETA."""
        if self.live is not None and count > 1:
            self.live.begin_batch(count)

    def begin_output(self, prefix: str, header: str = "") -> None:
        """Start a new output: `prefix` (e.g. "[2/5]") labels its progress; `header` (e.g. its seed
        and prompt) is a line in plain mode and the title of the live region on a terminal."""
        self.prefix = prefix
        self._stage = None
        if self.live is not None:
            # The batch bar already shows [k/N]: the title does not repeat it.
            self.live.begin_output(header.removeprefix(prefix).strip() if prefix else header)
        elif header:
            self.message(header)

    def finish_output(self, summary: str) -> None:
        """One output is written: its summary line stays; the batch bar advances."""
        if self.live is not None:
            self.live.finish_output()
            if not self.quiet:
                self.live.print(f"{DONE_MARK} {summary}")
        else:
            self.message(summary)

    def on_event(self, event: Event) -> None:
        """The engine's progress callback."""
        if self.quiet:
            return
        if self.live is not None:
            self.live.stage(stage_label(event), event.done, event.total, new=event.stage != self._stage)
            self._stage = event.stage
            return
        new_stage = event.stage != self._stage
        self._stage = event.stage
        label = f"{self.prefix} {stage_label(event)}".strip()
        if self.verbose:
            count = f" {event.done}/{event.total}" if event.total else ""
            note = f": {event.message}" if event.message else ""
            self.message(f"{label}{count}{note}")
        elif new_stage and event.stage != "load":  # the model line, printed once loaded, says it
            total = f" ({event.total} steps)" if event.total and event.stage == "sample" else ""
            self.message(f"{self.prefix} {STAGE_NAMES.get(event.stage, event.stage)}{total}...".strip())
