"""What the CLI hands the engine and what it gets back: plain data, no tensors in requests."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

Mode = Literal["t2i", "t2v", "i2v", "extend"]


@dataclass(frozen=True)
class GenerationRequest:
    """One output to generate. `None` means "the preset's default"."""

    mode: Mode
    prompt: str
    seed: int
    negative_prompt: str = ""
    seconds: Optional[int] = None
    cfg: Optional[float] = None
    tau_image: Optional[float] = None
    tau_video: Optional[float] = None
    prompt_decoration: bool = True
    image: Optional[Path] = None
    video: Optional[Path] = None
    # i2v/extend: None = the preset's aspect template, "auto" = the input's own ratio, or "W:H".
    aspect: Optional[str] = None
    # extend: condition on the first window of the input instead of the last (the reference's choice).
    from_start: bool = False
    # extend: the result holds only the new frames (else the input followed by the continuation).
    only_new: bool = False


@dataclass(frozen=True)
class Event:
    """Progress report. stage: load | segment | encode_reference | encode_text | sample | decode | write.

    `done`/`total` count units of the stage (sampling steps, decoded frames); clip, scale and
    repetition locate a sampling step.
    """

    stage: str
    done: int = 0
    total: int = 0
    clip: Optional[int] = None
    scale: Optional[int] = None
    repetition: Optional[int] = None
    message: str = ""


EventCallback = Callable[[Event], None]


@dataclass
class Result:
    """A finished generation. `frames` is a uint8 tensor [T, H, W, 3] (RGB).

    `decoded` holds every frame the model decoded (for extend: the re-quantized conditioning window
    and the new frames), which a following story segment continues from; `carry` is the latent
    window the interact recipe continues from (engine.conditioning.Carry, None for other presets).
    """

    frames: Any
    fps: int
    metadata: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    decoded: Any = None
    carry: Any = None
