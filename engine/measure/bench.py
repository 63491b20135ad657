"""The harness behind `infinistar bench`: stage times, per-step times and peak memory of real runs.

The bench runs `Pipeline.run` itself and times it from the outside through its events
(engine.measure.clocks), so it measures exactly what `t2v`/`t2i` execute; the file write is
`video_io.write_result` into a temporary folder that is deleted afterwards. The model is loaded,
or built with random weights (engine.measure.random_weights); FLOP/s are compared with the
machine's peak (engine.measure.machine). The report is a `BenchReport` (engine.measure.bench_report).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from engine import presets
from engine.checkpoints.loading import resolve_device
from engine.checkpoints.model_folder import preset_for_folder
from engine.errors import InfinistarError
from engine.generate.pipeline import Pipeline, frames_for, sampling_for
from engine.measure.bench_report import (Analytic, BenchReport, ClipTime, Load, MemoryNote, Run, Sampling, ScaleTime,
                                         Stage, analytic_report)
from engine.measure.clocks import MemoryProbe, StageClock, synchronize
from engine.measure.costs import GenerationCost, generation_cost, parameter_count
from engine.measure.machine import environment, load_average, peak_flops
from engine.measure.random_weights import random_components, random_weight_bytes
from engine.media import video_io
from engine.model.schedule import build_schedule
from engine.model.text_encoder import FLAN_T5_MAX_LENGTH, TINY_MAX_LENGTH
from engine.presets import Preset
from engine.request import GenerationRequest

DEFAULT_PROMPT = "a red fox running through fresh snow at golden hour, cinematic"
MODES = ("t2v", "t2i", "i2v")
GIB = 2**30
NOTES = (
    "tokens_per_second counts visual query tokens of every step (repetitions included) per batch "
    "row; with guidance each token is computed twice (cond + uncond), which the FLOPs include.",
    "sampling time includes the text prefix pass, sampling, guidance and latent accumulation; "
    "FLOPs count matrix products only.",
)

BenchCallback = Callable[[str], None]


class BenchError(InfinistarError):
    """A bench that cannot or should not be run as asked."""


@dataclass(frozen=True)
class BenchSpec:
    """What to measure. `model` is a preset name or a model folder."""

    model: str = "tiny"
    device: str = "auto"
    mode: str = "t2v"
    seconds: Optional[int] = None
    repeat: int = 1
    warmup: int = 1
    random_weights: bool = False
    force: bool = False
    prompt: str = DEFAULT_PROMPT
    seed: int = 0
    cache_dir: Optional[str] = None
    threads: Optional[int] = None  # CPU threads for the bench (torch.set_num_threads), restored after


def preset_of(model: str) -> Preset:
    """The preset a name or model folder runs with, without loading any weights."""
    if model in presets.names():
        return presets.get(model)
    if Path(model).is_dir():
        return preset_for_folder(Path(model))
    if "/" in model or "\\" in model or model.startswith("."):
        raise BenchError(f"model folder {model} does not exist.")
    return presets.get(model)  # raises UnknownPresetError listing the known names


def _check(spec: BenchSpec) -> None:
    if spec.mode not in MODES:
        raise BenchError(f"mode {spec.mode!r} is not one of {', '.join(MODES)}.")
    if spec.repeat < 1 or spec.warmup < 0:
        raise BenchError("--repeat must be at least 1 and --warmup at least 0.")
    if spec.threads is not None and spec.threads < 1:
        raise BenchError("--threads must be at least 1.")


# ---------------------------------------------------------------------------------- analytic


def analyze(spec: BenchSpec, text_tokens: Optional[int] = None) -> Analytic:
    """Tokens, FLOPs, KV-cache and weight sizes of one generation; no model is built.

    Without `text_tokens` the prompt is assumed as long as the text encoder allows (an upper bound).
    """
    _check(spec)
    preset = preset_of(spec.model)
    cost, frames, guided = generation_cost_for(preset, spec, text_tokens or max_text_tokens(preset))
    return analytic_report(preset, cost, frames, guided, text_tokens is None)


def max_text_tokens(preset: Preset) -> int:
    """The longest prompt the preset's text encoder passes on (its tokenizer's max length)."""
    encoder_max = TINY_MAX_LENGTH if preset.text_encoder == "tiny" else FLAN_T5_MAX_LENGTH
    return min(encoder_max, preset.transformer.text_maxlen)


def generation_cost_for(preset: Preset, spec: BenchSpec, text_tokens: int) -> tuple[GenerationCost, int, bool]:
    """(cost, pixel frames, guided) of the generation `spec` asks of `preset`."""
    mode = "t2i" if spec.mode == "t2i" else "t2v"  # i2v runs the t2v schedule, forced scales included
    frames = frames_for(preset, mode, spec.seconds)
    schedule = build_schedule(preset, frames)
    sampling = sampling_for(preset, GenerationRequest(mode=mode, prompt="x", seed=spec.seed))
    guided = sampling.guided
    cost = generation_cost(schedule, preset.transformer, text_tokens, guided,
                           max_repeat_times=sampling.max_repeat_times)
    return cost, frames, guided


# ---------------------------------------------------------------------------------- the bench


def check_random_weights(preset: Preset, device: torch.device, force: bool) -> None:
    """Refuse building a multi-billion-parameter model in CPU RAM unless forced."""
    needed = random_weight_bytes(preset, device)
    if device.type == "cpu" and parameter_count(preset.transformer) > 1e9 and not force:
        raise BenchError(
            f"--random-weights would build the {preset.name} model on the CPU with about {needed / GIB:.0f} GiB "
            f"of fp32 weights in RAM; pass --force to do it anyway, or --dry-run for the analytic figures only."
        )


def run_bench(spec: BenchSpec, on_message: Optional[BenchCallback] = None) -> BenchReport:
    """Load (or build) the model, run warm-up + measured generations, return the report."""
    _check(spec)
    before = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        return _run_bench(spec, on_message)
    finally:
        torch.set_num_threads(before)


def _run_bench(spec: BenchSpec, on_message: Optional[BenchCallback]) -> BenchReport:
    say = on_message or (lambda text: None)
    load_before = load_average()
    device = resolve_device(spec.device)
    preset = preset_of(spec.model)
    if spec.random_weights:
        check_random_weights(preset, device, spec.force)
    memory = MemoryProbe(device)

    memory.reset()
    synchronize(device)
    start = time.perf_counter()
    if spec.random_weights:
        say(f"building {preset.name} with random weights on {device} "
            f"(about {random_weight_bytes(preset, device) / GIB:.1f} GiB)")
        pipeline = Pipeline(random_components(preset, device, spec.seed))
    else:
        say(f"loading {spec.model} on {device}")
        pipeline = Pipeline.load(spec.model, device=str(device), cache_dir=spec.cache_dir)
    synchronize(device)
    load = Load(time.perf_counter() - start, memory.peak_bytes(), spec.random_weights)
    pipeline.load_seconds = load.seconds
    return measure(pipeline, spec, load, memory, load_before, say)


def measure(pipeline: Pipeline, spec: BenchSpec, load: Load, memory: Optional[MemoryProbe] = None,
            load_before: Optional[tuple[float, ...]] = None,
            on_message: Optional[BenchCallback] = None) -> BenchReport:
    """Warm-up + measured runs of an already loaded pipeline (its preset may be any Preset);
    `load` records how it was obtained."""
    say = on_message or (lambda text: None)
    device = pipeline.device
    memory = memory or MemoryProbe(device)
    load_before = load_before or load_average()
    preset = pipeline.preset
    with tempfile.TemporaryDirectory(prefix="infinistar-bench-") as tmp:
        request = _request(spec, preset, Path(tmp))
        frames = frames_for(preset, "t2i" if spec.mode == "t2i" else "t2v", spec.seconds)
        text_tokens = int(pipeline.components.text.tokenize([pipeline.prompt_text(request, frames)])[1].sum())
        cost, frames, guided = generation_cost_for(preset, spec, text_tokens)
        runs: list[tuple[Run, list[dict]]] = []
        total = spec.warmup + spec.repeat
        for i in range(total):
            kind = "warmup" if i < spec.warmup else "measured"
            say(f"run {i + 1}/{total} ({kind})")
            runs.append(_one_run(pipeline, request, memory, Path(tmp), kind))

    dtype = pipeline.components.transformer.block_dtype
    cfg = preset.transformer
    measured = [(run, steps) for run, steps in runs if run.kind == "measured"]
    warm = _median_stages([run for run, _ in measured])
    _, representative = sorted(measured, key=lambda r: r[0].stages["sample"].seconds)[len(measured) // 2]
    sample_seconds = warm["sample"].seconds
    rows = min(max(s.query_tokens for s in cost.steps) * cost.batch, 4096)
    peak = peak_flops(device, dtype, (rows, cfg.embed_dim, cfg.mlp_hidden))
    achieved = cost.flops / sample_seconds
    per_clip, slowest = _sampling_detail(representative, cost)
    say("done")
    return BenchReport(
        model=spec.model,
        mode=spec.mode,
        environment=environment(device, dtype, cfg, load_before),
        analytic=analytic_report(preset, cost, frames, guided, assumed_text=False),
        load=load,
        runs=tuple(run for run, _ in runs),
        cold=runs[0][0].stages,
        warm=warm,
        warm_includes_cold_run=spec.warmup == 0,
        sampling=Sampling(sample_seconds, cost.num_steps, cost.num_steps / sample_seconds,
                          cost.query_tokens / sample_seconds, achieved, achieved / peak.value, per_clip, slowest),
        peak_flops=peak,
        memory=MemoryNote(memory.attribution),
        warnings=_warnings(device, load_before),
        notes=NOTES,
    )


def _median_stages(runs: list[Run]) -> dict[str, Stage]:
    return {n: Stage(statistics.median(r.stages[n].seconds for r in runs),
                     max(r.stages[n].peak_memory_bytes for r in runs)) for n in runs[0].stages}


def _sampling_detail(steps: list[dict], cost: GenerationCost,
                     slowest: int = 5) -> tuple[tuple[ClipTime, ...], tuple[ScaleTime, ...]]:
    """Per-clip and per-scale time of one run's sampling steps."""
    by_scale: dict[int, dict] = {}
    for i, (step, analytic) in enumerate(zip(steps, cost.steps)):
        entry = by_scale.setdefault(step["scale"], {"scale": step["scale"], "clip": step["clip"], "steps": 0,
                                                    "seconds": 0.0, "query_tokens": analytic.query_tokens,
                                                    "key_tokens": analytic.key_tokens, "flops": 0})
        entry["steps"] += 1
        entry["seconds"] += step["seconds"]
        # The first step's time includes the text prefix pass, so its FLOPs do too.
        entry["flops"] += analytic.flops + (cost.prefix_flops if i == 0 else 0)
    clips: dict[int, dict] = {}
    for entry in by_scale.values():
        clip = clips.setdefault(entry["clip"], {"clip": entry["clip"], "steps": 0, "seconds": 0.0, "flops": 0})
        for key in ("steps", "seconds", "flops"):
            clip[key] += entry[key]
    top = sorted(by_scale.values(), key=lambda e: -e["seconds"])[:slowest]
    return tuple(ClipTime(**c) for c in clips.values()), tuple(ScaleTime(**e) for e in top)


def _warnings(device: torch.device, load_before: Optional[tuple[float, ...]]) -> tuple[str, ...]:
    """Conditions that make the figures unrepresentative."""
    busy = load_before is not None and os.cpu_count() and load_before[0] > os.cpu_count()
    if device.type == "cpu" and busy and torch.get_num_threads() > 1:
        return (f"the machine was busy (load {load_before[0]:g} on {os.cpu_count()} cores) and torch used "
                f"{torch.get_num_threads()} threads: small operations can stall waiting for a preempted thread; "
                "compare with --threads 1.",)
    return ()


def _request(spec: BenchSpec, preset: Preset, tmp: Path) -> GenerationRequest:
    image = None
    if spec.mode == "i2v":
        from PIL import Image

        h, w = build_schedule(preset, frames_for(preset, "t2v", spec.seconds)).pixel_size
        image = tmp / "first_frame.png"
        Image.new("RGB", (w, h), (120, 130, 140)).save(image)
    return GenerationRequest(mode=spec.mode, prompt=spec.prompt, seed=spec.seed, seconds=spec.seconds, image=image)


def _one_run(pipeline: Pipeline, request: GenerationRequest, memory: MemoryProbe, tmp: Path,
             kind: str) -> tuple[Run, list[dict]]:
    """One timed generation and file write: its stages, and the times of its sampling steps."""
    clock = StageClock(pipeline.device, memory)
    start = clock.now()
    result = pipeline.run(request, on_event=clock)
    clock.begin("write")
    suffix = video_io.VIDEO_SUFFIX if result.frames.shape[0] > 1 else video_io.IMAGE_SUFFIX
    path = video_io.write_result(result, tmp / f"bench{suffix}", overwrite=True)
    end = clock.end()
    for leftover in (path, video_io.sidecar_path(path)):
        leftover.unlink(missing_ok=True)
    stages = {name: Stage(**figures) for name, figures in clock.stages.items()}
    attributed = sum(s.seconds for s in stages.values())
    return Run(kind, stages, end - start, max(0.0, end - start - attributed)), clock.steps
