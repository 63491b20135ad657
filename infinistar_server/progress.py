"""A job's live progress from the engine's events: percent, stage and an ETA (the server's renderer)."""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from engine import Event

# Share of the whole job each stage covers, in percent: sampling dominates, as it does in time.
STAGES = {"load": (0, 5), "encode_reference": (5, 8), "encode_text": (8, 10), "sample": (10, 88),
          "decode": (88, 98), "write": (98, 99)}


class JobCancelled(Exception):
    """Raised from the event callback: the engine stops at its next step and writes nothing."""


class JobProgress:
    """The event callback of one running job (it also serves as the CLI reporter generate_one expects).

    `should_stop()` is polled at every event, so a cancel takes effect within one sampling step.
    """

    def __init__(self, should_stop: Callable[[], bool], on_stage: Callable[[str, int], None]) -> None:
        self.should_stop = should_stop
        self.on_stage = on_stage
        self.prefix = ""
        self.started = time.monotonic()
        self.percent = 0
        self.stage: Optional[str] = None
        self.segment = (0, 1)
        self.lock = threading.Lock()

    # --- the reporter interface of infinistar_cli.one_output.generate_one
    def begin_output(self, prefix: str, header: str = "") -> None:
        self.prefix = prefix  # the header (a story segment's prompt) is for people at a terminal

    def message(self, text: str) -> None:
        pass

    def on_event(self, event: Event) -> None:
        if self.should_stop():
            raise JobCancelled()
        if event.stage == "segment":
            self.segment = (max(event.done - 1, 0), max(event.total, 1))
            return
        low, high = STAGES.get(event.stage, (self.percent, self.percent))
        share = event.done / event.total if event.total else 0.0
        within = low + (high - low) * min(share, 1.0)
        done, count = self.segment
        if event.stage != "load":
            within = 10 + (done * 90 + (within - 10)) / count if within >= 10 else within
        new_stage = event.stage != self.stage
        with self.lock:
            self.percent = max(self.percent, min(int(within), 99))
            self.stage = event.stage
        if new_stage:
            self.on_stage(event.stage, self.percent)

    def snapshot(self) -> dict:
        with self.lock:
            percent, stage = self.percent, self.stage
        elapsed = time.monotonic() - self.started
        eta = round(elapsed * (100 - percent) / percent, 1) if percent >= 10 else None
        return {"progress": percent, "stage": stage, "eta_seconds": eta}
