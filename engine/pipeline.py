"""Placeholder with the agreed interface so the CLI imports; the lead engineer replaces this file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from engine.request import EventCallback, GenerationRequest, Result


class Pipeline:
    """request -> text encode -> sample -> VAE decode -> Result."""

    preset: Any

    @classmethod
    def load(cls, model: str | Path, device: str = "auto", on_event: Optional[EventCallback] = None) -> "Pipeline":
        raise NotImplementedError("the generation pipeline is not integrated yet")

    def run(self, request: GenerationRequest, on_event: Optional[EventCallback] = None) -> Result:
        raise NotImplementedError("the generation pipeline is not integrated yet")


def load_pipeline(model: str | Path, device: str = "auto", on_event: Optional[EventCallback] = None) -> Pipeline:
    """Load the preset or model directory `model` on `device`."""
    return Pipeline.load(model, device=device, on_event=on_event)
