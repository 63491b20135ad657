"""What `infinistar bench` reports, as frozen dataclasses: the analytic cost of the generation and,
for a real run, the environment, load, per-run stage figures, sampling speed and peak FLOP/s.

`to_dict()` gives the JSON object `infinistar bench --json` prints (field names are its keys).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.measure.costs import GenerationCost, parameter_count
from engine.measure.machine import Environment, PeakFlops
from engine.measure.random_weights import transformer_bytes
from engine.model.schedule import build_schedule
from engine.presets import Preset

KV_POLICY = "minimal (text + referenced scales, freed after last use)"


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (nested records become objects)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Flops:
    """Matrix-product FLOPs of one generation, by part (see engine.measure.costs)."""

    total: int
    projections: int
    attention: int
    mlp: int
    embed_and_heads: int
    text_prefix: int


@dataclass(frozen=True)
class KVCache:
    policy: str
    elements: int  # peak cached K+V elements, all layers, whole batch
    bytes_bf16: int
    bytes_fp32: int


@dataclass(frozen=True)
class TransformerBytes:
    bf16_blocks: int  # as loaded on CUDA: blocks bf16, the rest fp32
    fp32: int


@dataclass(frozen=True)
class Analytic(_Record):
    """Tokens, FLOPs, KV-cache and weight sizes of one generation; no model built."""

    preset: str
    frames: int
    seconds: float
    height: int
    width: int
    latent_frames: int
    clips: int
    scales: int
    guidance: bool
    text_tokens_assumed_max: bool
    steps: int
    batch: int
    text_tokens: int
    query_tokens: int  # visual query tokens of every step, per batch row
    attended_pairs: int
    max_query_tokens: int
    max_key_tokens: int
    flops: Flops
    kv_cache: KVCache
    transformer_parameters: int
    transformer_bytes: TransformerBytes


def analytic_report(preset: Preset, cost: GenerationCost, frames: int, guided: bool, assumed_text: bool) -> Analytic:
    schedule = build_schedule(preset, frames)
    params = parameter_count(preset.transformer)
    h, w = schedule.pixel_size
    flops = Flops(cost.flops, cost.total("projection_flops"), cost.total("attention_flops"), cost.total("mlp_flops"),
                  cost.total("other_flops"), cost.prefix_flops)
    kv = cost.kv_cache_elements
    return Analytic(
        preset=preset.name, frames=frames, seconds=(frames - 1) / preset.fps if frames > 1 else 0,
        height=h, width=w, latent_frames=schedule.latent_frames, clips=schedule.num_clips,
        scales=len(schedule.infos), guidance=guided, text_tokens_assumed_max=assumed_text,
        steps=cost.num_steps, batch=cost.batch, text_tokens=cost.text_tokens, query_tokens=cost.query_tokens,
        attended_pairs=cost.key_tokens, max_query_tokens=max(s.query_tokens for s in cost.steps),
        max_key_tokens=max(s.key_tokens for s in cost.steps), flops=flops,
        kv_cache=KVCache(KV_POLICY, kv, 2 * kv, 4 * kv), transformer_parameters=params,
        transformer_bytes=TransformerBytes(transformer_bytes(preset, bf16=True), 4 * params),
    )


@dataclass(frozen=True)
class Stage:
    seconds: float
    peak_memory_bytes: int


@dataclass(frozen=True)
class Load:
    """How the model was obtained: loading it (or building it with random weights) took `seconds`."""

    seconds: float
    peak_memory_bytes: int
    random_weights: bool


@dataclass(frozen=True)
class Run:
    kind: str  # "warmup" | "measured"
    stages: dict[str, Stage]  # in pipeline order
    total_seconds: float
    unattributed_seconds: float  # time between stages (event handling, Python)


@dataclass(frozen=True)
class ClipTime:
    clip: int
    steps: int
    seconds: float
    flops: int


@dataclass(frozen=True)
class ScaleTime:
    scale: int
    clip: int
    steps: int
    seconds: float
    query_tokens: int
    key_tokens: int
    flops: int  # the first step's include the text prefix pass


@dataclass(frozen=True)
class Sampling:
    """The sampling stage of the warm runs, against the analytic cost."""

    seconds: float
    steps: int
    steps_per_second: float
    tokens_per_second: float
    flops_per_second: float
    mfu: float
    per_clip: tuple[ClipTime, ...]  # of the median run
    slowest_scales: tuple[ScaleTime, ...]


@dataclass(frozen=True)
class MemoryNote:
    attribution: str  # what a peak memory figure measures (engine.measure.clocks)


@dataclass(frozen=True)
class BenchReport(_Record):
    model: str
    mode: str
    environment: Environment
    analytic: Analytic
    load: Load
    runs: tuple[Run, ...]
    cold: dict[str, Stage]  # the first run's stages
    warm: dict[str, Stage]  # median seconds, largest peak of the measured runs
    warm_includes_cold_run: bool
    sampling: Sampling
    peak_flops: PeakFlops
    memory: MemoryNote
    warnings: tuple[str, ...]  # conditions that make the figures unrepresentative
    notes: tuple[str, ...]
