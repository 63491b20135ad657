"""A fake engine pipeline injected at the one seam the CLI uses: `engine.load_pipeline` (the `fake`
fixture in conftest.py installs it), and helpers to run the CLI in-process."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Optional

import torch
from click.testing import CliRunner

from engine.errors import InfinistarError
from engine.request import Event, GenerationRequest, ModelInfo, Result
from infinistar_cli.main import cli


class UnknownPresetError(InfinistarError):
    """Stand-in for the engine's error for an unknown preset name."""


def fake_frames(seed: int, count: int, size: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, size, size, 3), generator=generator, dtype=torch.uint8)


@dataclass
class FakeEngine:
    """Records loads and requests; run() returns frames that depend only on the seed."""

    loads: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    known: tuple = ("720p", "480p", "tiny")
    fail_run: Optional[Callable[[GenerationRequest], None]] = None

    load_options: list = field(default_factory=list)  # keyword options of each load (offload, weights)
    event_delay: float = 0.0  # seconds between progress events, so a live display has time to draw

    def load(self, model, device="auto", on_event=None, cache_dir=None, **options):
        if str(model) not in self.known:
            raise UnknownPresetError(f"unknown preset '{model}' (known: {', '.join(self.known)})")
        self.loads.append((str(model), device))
        self.load_options.append(options)
        if on_event:
            on_event(Event(stage="load", done=1, total=1))
        return FakePipeline(self, SimpleNamespace(name=str(model), fps=8, frames=(9, 17)), options)


@dataclass
class FakePipeline:
    engine: FakeEngine
    preset: SimpleNamespace
    options: dict = field(default_factory=dict)  # offload and weights modes it was loaded with

    def info(self) -> ModelInfo:
        modes = {k: v for k, v in self.options.items() if k in ("offload", "weights")}
        return ModelInfo(name=self.preset.name, source=f"/models/{self.preset.name}", built_in=False, device="cpu",
                         dtype="float32", text_max_tokens=64, compiled=self.options.get("compile", False), **modes)

    def run_story(self, requests, on_event=None):
        """One Result per segment, each announced by a `segment` event like engine.generate.segments's."""
        for number, request in enumerate(requests, start=1):
            if on_event:
                on_event(Event("segment", number, len(requests), message=request.prompt))
            yield self.run(request, on_event)

    def run(self, request: GenerationRequest, on_event=None) -> Result:
        self.engine.requests.append(request)
        if self.engine.fail_run:
            self.engine.fail_run(request)
        events = [Event("encode_text"), Event("sample", 1, 2, clip=0, scale=0), Event("sample", 2, 2, clip=0, scale=1),
                  Event("decode", 1, 1)]
        for event in events:
            time.sleep(self.engine.event_delay)
            if on_event:
                on_event(event)
        count = 1 if request.mode == "t2i" else 4 * (request.seconds or 2) + 1
        return Result(frames=fake_frames(request.seed, count), fps=self.preset.fps,
                      metadata={"preset": self.preset.name, "output_frames": count, "height": 16, "width": 16,
                                "prompt_tokens": len(request.prompt.encode()) + 1, "text_max_tokens": 64},
                      timings={"sample": 0.01})


def invoke(*args: str, input: Optional[str] = None, env: Optional[dict] = None):
    """Run the CLI in-process; the result has exit_code, stdout, stderr."""
    return CliRunner().invoke(cli, list(args), input=input, env=env, prog_name="infinistar")


def error_line(result) -> str:
    """The single `Error: ...` line a failed command prints, checked to be alone on stderr."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]
