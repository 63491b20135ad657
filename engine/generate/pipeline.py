"""The generation pipeline: request -> text encoding -> the one sampling loop -> VAE decode -> Result.

t2i, t2v, i2v and extend differ only in the frame count and in how many leading scales are
forced from an encoded reference; they all go through `engine.generate.sampling.sample_latent`.
Progress is reported as `Event`s; nothing here prints.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from engine import __version__
from engine.generate import conditioning
from engine.checkpoints import speed
from engine.errors import ConditioningError, InfinistarError
from engine.checkpoints.loading import TINY_DIR, Components, device_memory, load_components
from engine.presets import Preset, SamplingConfig
from engine.request import Event, EventCallback, GenerationRequest, ModelInfo, Result
from engine.generate.sampling import StepEvent, TextCondition, sample_latent
from engine.generate.segments import continuation_window
from engine.model.schedule import Schedule
from engine.model.text_encoder import prompt_text
from engine.model.vae import smooth_first_frame


class RequestError(InfinistarError):
    """A request the loaded model cannot serve (frame count, empty prompt, ...)."""


@dataclass
class Generated(Result):
    """A Result with what a following story segment continues from: every frame the model decoded
    (for extend: the re-quantized conditioning window and the new frames) and, for the interact
    recipe, the latent window (None for other presets)."""

    decoded: Optional[torch.Tensor] = None
    carry: Optional[conditioning.Carry] = None


def _ignore(event: Event) -> None:
    pass


def frames_for(preset: Preset, mode: str, seconds: Optional[int]) -> int:
    """Pixel frames for a request: 1 for images, else `seconds` at the preset's fps (its default
    when None). Durations the preset was not released with are refused, naming the valid ones."""
    if mode == "t2i":
        return 1
    if seconds is None:
        return preset.frames[0]
    frames = seconds * preset.fps + 1
    if frames not in preset.frames:
        valid = ", ".join(f"{(f - 1) // preset.fps}" for f in preset.frames)
        hint = " (10 s exists only at 480p: use --res 480p)" if preset.name == "720p" and seconds == 10 else ""
        raise RequestError(f"model {preset.name} makes videos of {valid} s, not {seconds} s{hint}.")
    return frames


def decorates(request: GenerationRequest) -> bool:
    """Whether the prompt gets the official decoration: as asked, else for videos only."""
    if request.prompt_decoration is None:
        return request.mode != "t2i"
    return request.prompt_decoration


def sampling_for(preset: Preset, request: GenerationRequest) -> SamplingConfig:
    """The preset's sampling defaults with the request's explicit choices applied."""
    changes = {"seed": request.seed}
    for field, value in (("cfg_scale", request.cfg), ("tau_image", request.tau_image),
                         ("tau_video", request.tau_video)):
        if value is not None:
            changes[field] = float(value)
    if request.guidance is not None:
        changes["guidance"] = request.guidance
    for field in ("tau_image", "tau_video"):
        if changes.get(field, 1.0) <= 0:
            raise RequestError(f"--{field.replace('_', '-')} must be positive.")
    return replace(preset.sampling, **changes)


class Pipeline:
    """A loaded model, ready to serve many requests (the batch loads it once)."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self.preset = components.preset
        self.load_seconds = 0.0

    @classmethod
    def load(cls, model: str | Path, device: str = "auto", on_event: Optional[EventCallback] = None,
             cache_dir: str | Path | None = None, offload: str = "none", weights: str = "bf16",
             dtype: str = "auto", compile: bool = False, parallel: str = "none") -> "Pipeline":
        emit = on_event or _ignore
        emit(Event("load", 0, 1, message=f"loading {model}"))
        start = time.perf_counter()
        pipeline = cls(load_components(model, device, cache_dir, offload, weights, dtype, compile, parallel))
        pipeline.load_seconds = time.perf_counter() - start
        emit(Event("load", 1, 1, message=f"loaded {pipeline.preset.name} on {pipeline.device}"))
        return pipeline

    @property
    def device(self) -> torch.device:
        return self.components.device

    def info(self) -> ModelInfo:
        """What was loaded, where and how (the GPU's free memory is read now)."""
        c = self.components
        name, free, total = device_memory(self.device)
        dtype = str(c.transformer.block_dtype).replace("torch.", "")  # what the blocks compute in
        return ModelInfo(name=self.preset.name, source=c.source, built_in=Path(c.source) == TINY_DIR,
                         device=str(self.device), dtype=dtype, offload=c.offload, weights=c.weights,
                         device_name=name, free_bytes=free, total_bytes=total, text_max_tokens=c.text.max_length,
                         compiled=c.compiled)

    def _use(self, component: str) -> None:
        """With --offload, bring `component` ("text", "transformer", "vae") onto the GPU."""
        if self.components.offloader is not None:
            self.components.offloader.use(component)

    def _autocast(self):
        if speed.uses_autocast(self.components.dtype, self.device):
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def prompt_text(self, request: GenerationRequest, frames: int) -> str:
        """The text sent to the encoder: the preset's decoration when `decorates` says so."""
        seconds = None if frames == 1 else (frames - 1) // self.preset.fps
        return prompt_text(request.prompt, decoration=self.preset.decoration, seconds=seconds,
                           decorate=decorates(request))

    def run(self, request: GenerationRequest, on_event: Optional[EventCallback] = None,
            reference: Optional[conditioning.Reference] = None) -> Generated:
        """Generate one output. i2v/extend read `request.image`/`request.video`, or continue the
        in-memory `reference` frames (story segments, engine.generate.segments)."""
        emit = on_event or _ignore
        if request.mode in ("t2i", "t2v") and not request.prompt.strip():
            raise RequestError("the prompt is empty.")
        if request.mode not in ("t2i", "t2v", "i2v", "extend"):
            raise RequestError(f"unknown mode {request.mode!r}.")
        c = self.components
        sampling = sampling_for(self.preset, request)
        timings = {"load": round(self.load_seconds, 4)}
        start = time.perf_counter()
        if request.mode in ("i2v", "extend"):
            emit(Event("encode_reference", 0, 1))
            self._use("vae")  # the reference is encoded before the text and the transformer run
        frames = 0 if request.mode == "extend" else frames_for(self.preset, request.mode, request.seconds)
        cond = conditioning.resolve(self.preset, c.vae, request, frames, reference)
        schedule = cond.schedule
        if request.mode in ("i2v", "extend"):
            emit(Event("encode_reference", 1, 1))
            timings["encode_reference"] = time.perf_counter() - start

        start = time.perf_counter()
        emit(Event("encode_text", 0, 1))
        self._use("text")
        sent = self.prompt_text(request, cond.text_frames or schedule.num_frames)
        prompts = [sent] + ([request.negative_prompt] if request.negative_prompt else [])
        features = c.text.encode(prompts)
        text = TextCondition(features[0], features[1] if len(features) > 1 else None)
        emit(Event("encode_text", 1, 1))
        timings["encode_text"] = time.perf_counter() - start

        start = time.perf_counter()

        def on_step(step: StepEvent) -> None:
            emit(Event("sample", step.step + 1, step.num_steps, step.clip, step.scale, step.repetition))

        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        self._use("transformer")
        with self._autocast():
            sampled = sample_latent(c.transformer, schedule, text, sampling, generator, forced_bits=cond.forced_bits,
                                    forced_scales=cond.forced_scales, conditions=cond.conditions, on_step=on_step)
        timings["sample"] = time.perf_counter() - start

        start = time.perf_counter()
        latent = cond.full_latent(sampled.latent)
        decoded = self.decode(latent, emit)
        timings["decode"] = time.perf_counter() - start

        frames = cond.compose(decoded)
        metadata = self.metadata(request, schedule, sampling, sent)
        metadata["prompt_tokens"] = c.text.count_tokens(sent)  # above text_max_tokens: truncated
        metadata["text_max_tokens"] = c.text.max_length
        metadata.update(cond.metadata)
        metadata["output_frames"] = len(frames)
        metadata["timings"] = {k: round(v, 4) for k, v in timings.items()}
        metadata["kv_cache_peak_bytes"] = sampled.kv_cache_peak_bytes
        return Generated(frames=frames, fps=self.preset.fps, metadata=metadata, timings=timings, decoded=decoded,
                         carry=cond.carry(latent))

    def run_story(self, requests: Sequence[GenerationRequest],
                  on_event: Optional[EventCallback] = None) -> Iterator[Generated]:
        """Consecutive segments of one video (engine.generate.segments.plan_segments), yielded one at a
        time: segment k > 0 is an extend step continuing the last window of the frames so far (with the
        interact recipe, the previous latent window); only its new frames are yielded, so writing them in
        order gives one video and memory holds one segment plus one window."""
        emit = on_event or _ignore
        window = continuation_window(self.preset)[0]
        tail: Optional[torch.Tensor] = None
        carry = None
        for k, request in enumerate(requests):
            emit(Event("segment", k + 1, len(requests), message=request.prompt))
            reference = None
            if k:
                if request.mode != "extend":
                    raise ConditioningError(
                        f"story segment {k + 1} must be an extend request, not {request.mode}.")
                reference = conditioning.Reference(tail, {"segment": k + 1, "continues": "the previous segments"}, carry)
            result = self.run(request, on_event, reference=reference)
            result.metadata["segment"] = k + 1
            decoded = result.decoded if result.decoded is not None else result.frames
            tail = decoded[-window:] if tail is None or len(decoded) >= window else torch.cat([tail, decoded])[-window:]
            carry = result.carry
            yield result

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, emit: EventCallback = _ignore) -> torch.Tensor:
        """Latent -> uint8 RGB frames [T, H, W, 3] on the CPU, chunk by chunk.

        Videos get the official post-processing (frame 0 replaced by frame 1), images do not
        (the reference crashes on one frame).
        """
        total = 1 + 4 * (latent.shape[2] - 1)
        chunks, done = [], 0
        self._use("vae")
        emit(Event("decode", 0, total))
        with self._autocast():
            for chunk in self.components.vae.decode_frames(latent):
                if not chunks:
                    chunk = smooth_first_frame(chunk)
                chunks.append(chunk.cpu())
                done += chunk.shape[0]
                emit(Event("decode", done, total))
        return torch.cat(chunks)

    def metadata(self, request: GenerationRequest, schedule: Schedule, sampling: SamplingConfig,
                 sent: str) -> dict:
        """What was generated and how: stored in the output file and its sidecar."""
        p = self.preset
        h, w = schedule.pixel_size
        return {
            "tool": "infinistar",
            "version": __version__,
            "mode": request.mode,
            "model": self.components.source,
            "preset": p.name,
            "prompt": request.prompt,
            "prompt_sent": sent,
            "prompt_decoration": decorates(request),
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "guidance": sampling.guidance,
            "cfg": sampling.cfg_scale,
            "cfg_video_detail": sampling.cfg_video_detail,
            "apg_norm_threshold": sampling.apg_norm_threshold,
            "tau_image": sampling.tau_image,
            "tau_video": sampling.tau_video,
            "schedule": [list(s) for s in schedule.scales],
            "steps": schedule.num_steps,
            "frames": schedule.num_frames,
            "fps": p.fps,
            "height": h,
            "width": w,
            "first_frame_smoothing": schedule.num_frames > 1,
            "device": str(self.device),
            "dtype": str(self.components.transformer.block_dtype).replace("torch.", ""),
            "weights": self.components.weights,
            "offload": self.components.offload,
            "compile": self.components.compiled,
        }


def load_pipeline(model: str | Path, device: str = "auto", on_event: Optional[EventCallback] = None,
                  cache_dir: str | Path | None = None, offload: str = "none", weights: str = "bf16",
                  dtype: str = "auto", compile: bool = False, parallel: str = "none") -> Pipeline:
    """Load the preset or model folder `model` on `device` (see engine.checkpoints.loading; `offload` and
    `weights` modes: engine.checkpoints.offload, engine.model.eight_bit; `dtype` and `compile`: engine.checkpoints.speed;
    `parallel="tensor"`: engine.parallel.tensor_parallel)."""
    return Pipeline.load(model, device=device, on_event=on_event, cache_dir=cache_dir,
                         offload=offload, weights=weights, dtype=dtype, compile=compile, parallel=parallel)
