"""Segment structure: what a request becomes when it makes more than one run, and the clip
arithmetic of a continuation. Torch-free, so front ends check a request before anything loads.

A continuation step (`extend`, and every story segment after the first) conditions on a window of
frames and adds new ones: with the `forced` recipe the output schedule is the preset's longest
video, the window is every clip but the last (forced) and the last clip is new (pipeline spec
§5.5); with `interact` the window is one clip and its first latent, the new part one clip (§5.6).

`plan_segments` turns a request and its further prompts (`--then`/`--story`) into the requests
that run one after another: extend's `--seconds` of new footage is that many continuation steps
with the same prompt, then one step per further prompt. Segment 1 is the request itself (t2v, i2v
or extend); every later segment is an extend step continuing the video so far
(`Pipeline.run_story`). `check_length` is the check front ends make before loading.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Optional

from engine import presets, validation
from engine.errors import ConditioningError
from engine.model.schedule import Schedule, build_schedule
from engine.presets import Preset
from engine.request import GenerationRequest

SEED_MODULUS = 2**32


def extend_layout(preset: Preset, h_div_w: Optional[float] = None) -> tuple[Schedule, int, int]:
    """(schedule, window frames, forced scales) of one continuation step with `preset`.

    The schedule is the preset's longest video; the window is every clip but the last.
    """
    schedule = build_schedule(preset, max(preset.frames), h_div_w)
    forced = schedule.scales_per_clip * (schedule.num_clips - 1)
    window_latents = schedule.latent_frames - schedule.clip_shapes[-1][0]
    window = 1 + preset.schedule.temporal_compression * (window_latents - 1)
    return schedule, window, forced


def uses_interact(preset: Preset) -> bool:
    """Whether continuations use the InfinityStar-Interact recipe (the preset's `continuation`)."""
    return preset.continuation == "interact"


def continuation_window(preset: Preset) -> tuple[int, int]:
    """(window frames a continuation conditions on, new frames it adds)."""
    if uses_interact(preset):
        clip, tc = preset.schedule.frames_inner_clip, preset.schedule.temporal_compression
        return 1 + tc * clip, tc * clip
    schedule, window, _ = extend_layout(preset)
    return window, schedule.num_frames - window


def step_seconds(preset: Preset) -> Fraction:
    """Seconds of new footage one continuation step adds."""
    return Fraction(continuation_window(preset)[1], preset.fps)


def extend_steps(preset: Preset, seconds: Optional[int]) -> int:
    """How many continuation steps make `seconds` of new footage (None: one)."""
    step = step_seconds(preset)
    if seconds is None:
        return 1
    steps = seconds / step
    if steps.denominator != 1 or steps < 1:
        raise ConditioningError(
            f"{preset.name} extends a video by {float(step):g} s per step; --seconds must be a multiple "
            f"of {float(step):g} (use --then for a new prompt per step)."
        )
    return int(steps)


def check_length(model: str, mode: str, seconds: Optional[int], where: str = "") -> None:
    """Refuse a `seconds` the named preset cannot serve, before anything is loaded: a video length
    it does not offer (validation.RequestFieldError naming `seconds`), or for extend new footage
    that is not a whole number of its continuation steps (ConditioningError). Model directories
    are checked once loaded."""
    if mode != "extend":
        validation.check_seconds(model, seconds, where)
    elif seconds is not None and model in presets.names():
        extend_steps(presets.get(model), seconds)


def segment_seed(seed: int, k: int) -> int:
    """Seed of segment k (0-based): seed + k, so segments differ but one seed fixes the story."""
    return (seed + k) % SEED_MODULUS


def story_requests(first: GenerationRequest, prompts: Sequence[str]) -> list[GenerationRequest]:
    """`first`, then one continuation per prompt; segment k samples with `segment_seed(seed, k)` (and an
    explicit encode seed steps the same way)."""
    encode = first.encode_seed
    rest = [
        replace(first, mode="extend", prompt=prompt, seed=segment_seed(first.seed, k), seconds=None, image=None,
                video=None, aspect=None, from_start=False, only_new=True,
                encode_seed=None if encode is None else segment_seed(encode, k))
        for k, prompt in enumerate(prompts, start=1)
    ]
    return [first, *rest]


def plan_segments(preset: Preset, request: GenerationRequest,
                  prompts: Sequence[str] = ()) -> list[GenerationRequest]:
    """The runs that make `request` followed by one segment per further prompt: one request when
    there is a single run. An extend request's `seconds` counts new footage: its first run adds
    one step (its `seconds` is cleared) and every further step continues with the same prompt."""
    prompts = list(prompts)
    if request.mode == "extend":
        steps = extend_steps(preset, request.seconds)
        prompts = [request.prompt] * (steps - 1) + prompts
        request = replace(request, seconds=None)
    return story_requests(request, prompts)
