"""Clocks and memory probes that cut a pipeline run into stages, read from its events.

The device is synchronised before every clock read. Peak memory per stage: on CUDA
`max_memory_allocated` after `reset_peak_memory_stats` at the stage start (tensors only, not the
allocator's cache). On Linux CPUs the kernel's peak RSS (VmHWM) is reset at each stage start by
writing 5 to /proc/self/clear_refs, so a stage's figure is the whole process's peak RSS during that
stage (weights and Python included). Where that reset is refused, VmHWM only grows and each figure
is the peak since the process started (said so in `MemoryProbe.attribution`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

from engine.request import Event


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryProbe:
    """Peak memory of one stage at a time (see the module docstring for what is measured)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.attribution = "cuda max_memory_allocated, reset at each stage start"
        elif self._reset_rss_peak():
            self.attribution = "process peak RSS (VmHWM), reset at each stage start via /proc/self/clear_refs"
        elif _status_kib("VmHWM") is not None:
            self.attribution = "process peak RSS (VmHWM) since the process started: it never decreases"
        else:
            self.attribution = "process peak RSS (getrusage ru_maxrss) since the process started"

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "reset" in self.attribution:
            self._reset_rss_peak()

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        hwm = _status_kib("VmHWM")
        if hwm is not None:
            return hwm * 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageClock:
    """Event callback that cuts a pipeline run into stages and sampling steps.

    Stage boundaries are the pipeline's own events: encode_text 0 -> 1, then each sampling step
    ends at its `sample` event, and decode runs from `decode 0` to `decode total` (i2v and extend
    add `encode_reference`). `stages` maps a stage to {"seconds", "peak_memory_bytes"}, `steps`
    lists {"clip", "scale", "repetition", "seconds"} per sampling step.
    """

    def __init__(self, device: torch.device, memory: MemoryProbe) -> None:
        self.device, self.memory = device, memory
        self.stages: dict[str, dict] = {}
        self.steps: list[dict] = []
        self._open: Optional[tuple[str, float]] = None
        self._last_step = 0.0

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def begin(self, stage: str) -> float:
        t = self.now()
        self.memory.reset()
        self._open = (stage, t)
        return t

    def end(self) -> float:
        t = self.now()
        if self._open is not None:
            stage, start = self._open
            self.stages[stage] = {"seconds": t - start, "peak_memory_bytes": self.memory.peak_bytes()}
            self._open = None
        return t

    def __call__(self, event: Event) -> None:
        if event.stage == "encode_reference" and event.done == 0:  # i2v / extend: the VAE encode
            self.begin("encode_reference")
        elif event.stage == "encode_reference":
            self.end()
        elif event.stage == "encode_text" and event.done == 0:
            self.begin("encode_text")
        elif event.stage == "encode_text":
            self.end()
            self._last_step = self.begin("sample")
        elif event.stage == "sample":
            t = self.now()
            self.steps.append({"clip": event.clip, "scale": event.scale, "repetition": event.repetition,
                               "seconds": t - self._last_step})
            self._last_step = t
        elif event.stage == "decode" and event.done == 0:
            self.end()
            self.begin("decode")
        elif event.stage == "decode" and event.done >= event.total:
            self.end()
