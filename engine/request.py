"""What the CLI hands the engine and what it gets back: plain data, no tensors in requests."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from engine.choices import GUIDANCE
from engine.errors import RequestError

Mode = Literal["t2i", "t2v", "i2v", "extend"]

# Sensible bounds of the sampling numbers (the released presets use cfg 3-34, tau 0.4-1): outside
# them the result is noise or the sampler overflows (cfg 1e30 or tau 1e-30 give inf/nan logits).
SAMPLING_RANGES = {"cfg": (0.0, 1000.0), "tau_image": (0.001, 10.0), "tau_video": (0.001, 10.0)}


def sampling_value_problem(name: str, value: object) -> Optional[str]:
    """Why `value` cannot be the sampling number `name` (a key of SAMPLING_RANGES); None if it can."""
    low, high = SAMPLING_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if not math.isfinite(value) or not low <= value <= high:
        return f"{value!r} is not a number from {low:g} to {high:g}"
    return None


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
    # The preset's official decoration (engine.presets.PromptDecoration); None = the mode's default:
    # on for videos, off for images (t2i sends the plain prompt, as image captions were trained).
    prompt_decoration: Optional[bool] = None
    image: Optional[Path] = None
    video: Optional[Path] = None
    # i2v/extend: None = the preset's aspect template, "auto" = the input's own ratio, or "W:H".
    aspect: Optional[str] = None
    # extend: condition on the first window of the input instead of the last (the reference's choice).
    from_start: bool = False
    # extend: the result holds only the new frames (else the input followed by the continuation).
    only_new: bool = False
    # "apg" | "cfg"; None = the preset's.
    guidance: Optional[str] = None
    # i2v/extend: seed of the VAE posterior draw of the input; None = `seed`.
    encode_seed: Optional[int] = None

    @property
    def posterior_seed(self) -> int:
        """Seed of the VAE posterior draw that encodes an input (i2v/extend)."""
        return self.seed if self.encode_seed is None else self.encode_seed

    def __post_init__(self) -> None:
        for name in SAMPLING_RANGES:
            value = getattr(self, name)
            problem = None if value is None else sampling_value_problem(name, value)
            if problem:
                raise RequestError(f"{name}: {problem}")
        if self.guidance is not None and self.guidance not in GUIDANCE:
            raise RequestError(f"guidance: {self.guidance!r} is not 'apg' or 'cfg'")


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


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded pipeline resolved to, for the first line a person reads.

    `device_name`, `free_bytes`, `total_bytes`: the GPU's name and memory (CUDA only, else None).
    """

    name: str  # the preset the weights run as
    source: str  # the folder the weights came from
    built_in: bool  # shipped inside the package (no download)
    device: str  # the device actually used ("cuda:0", "cpu", ...)
    dtype: str  # storage of the transformer blocks ("bfloat16", "float32", "int8", ...)
    offload: str = "none"
    weights: str = "bf16"
    device_name: Optional[str] = None
    free_bytes: Optional[int] = None
    total_bytes: Optional[int] = None
    text_max_tokens: Optional[int] = None  # the text encoder's token limit
    compiled: bool = False  # transformer blocks torch.compile'd (--compile)


@dataclass
class Result:
    """A finished generation. `frames` is a uint8 tensor [T, H, W, 3] (RGB)."""

    frames: Any
    fps: int
    metadata: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
