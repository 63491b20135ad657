"""Conditioning on a reference image or video: what i2v, extend and story continuations force.

A request resolves to a frozen `Conditioning` (schedule, bits of the encoded reference, number of
leading scales those bits force, condition tokens); the pipeline then makes the same
`sample_latent` call as t2v. The recipes take what they need: the preset, the VAE and the request.
Reading the inputs is engine.media's (images, videos); the clip arithmetic of a continuation is
engine.generate.segments'.

- i2v (pipeline spec §5.4): the image goes through the official `transform` (floor of the resized
  side, LANCZOS, centre crop, [-1, 1]), is VAE-encoded and quantized into the first-frame pyramid;
  every scale of that pyramid is forced (the reference's gt_leak 15 at 720p, 14 at 480p).
- extend with the `forced` continuation (spec §5.5, generalised through the schedule): the output
  schedule is the preset's longest video; every clip but the last is forced from the conditioning
  window, the last clip is sampled. 480p: 161 frames, window 81 (5 s: image pyramid + first clip),
  80 new frames, as the reference. 720p has one clip per video, so its window is a single frame:
  continuation from the last frame (i2v-like; motion is not carried over). tiny: 33 frames,
  window 17, 16 new. The window comes from the end of the input, resampled by time; `from_start`
  takes the reference's choice, the first 5 s stretched over the window exactly as its reader
  picks frames (engine.media.videos).
- The InfinityStar-Interact recipe (spec §5.6), the `interact` continuation of a preset: the
  previous 21-latent window (for an input video: its raw, unquantized encoding) becomes a semantic
  condition (its last 20 latents at the pyramid's 8th scale) and a detail condition (the story's
  first latent + the window's last two), attended by a one-clip segment schedule; the window's
  last 20 latents and the new 20 are decoded together and the last 80 frames kept.
- The VAE posterior sample: the reference draws ε from the unseeded global RNG; here it comes from
  a separate `torch.Generator` on the VAE's device seeded with the request's encode seed (by
  default its seed), so one seed fixes the whole output.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch
import torch.nn.functional as F

from engine.errors import ConditioningError
from engine.generate.sampling import ConditionTokens
from engine.generate.segments import continuation_window, extend_layout, extend_steps, step_seconds, uses_interact
from engine.media import videos
from engine.media.files import file_facts
from engine.media.images import load_image, open_image, transform_image
from engine.model.latent_bits import encode_bits
from engine.model.schedule import Schedule, build_schedule, build_segment_schedule
from engine.presets import Preset
from engine.request import GenerationRequest

# Interact (spec §5.6): the semantic condition's pyramid scale (6x11 at 480p 16:9; at most half the
# pyramid for smaller presets) and the RoPE scale-axis rows of the two conditions.
INTERACT_SEMANTIC_SCALE = 7
INTERACT_ROWS = (800, 801)


@dataclass(frozen=True)
class Reference:
    """Frames to condition on: uint8 RGB [T, H, W, 3] at the model's fps and pixel size.

    `source` describes where they came from (recorded in the metadata).
    """

    frames: torch.Tensor
    source: dict = field(default_factory=dict)
    carry: Optional["Carry"] = None  # interact: the previous latent window, instead of re-encoding frames


@dataclass(frozen=True)
class Carry:
    """What an interact segment continues from: the last window of latents [1, C, 1 + clip, h, w]
    and the story's first latent [1, C, 1, h, w], fixed for the whole story."""

    window: torch.Tensor
    first: torch.Tensor


@dataclass(frozen=True)
class Conditioning:
    """What a request forces. `prefix` frames go before the decoded ones in the result; the first
    `skip` decoded frames are left out of it (`only_new`)."""

    schedule: Schedule
    forced_bits: Optional[list[torch.Tensor]] = None
    forced_scales: int = 0
    prefix: Optional[torch.Tensor] = None
    skip: int = 0
    metadata: dict = field(default_factory=dict)
    conditions: tuple[ConditionTokens, ...] = ()
    latent_prefix: Optional[torch.Tensor] = None  # decoded together with (before) the sampled latent
    text_frames: Optional[int] = None  # the length the prompt's duration tag names, if not the schedule's
    carry_latents: int = 0  # interact: latents of the window a following segment continues
    first_latent: Optional[torch.Tensor] = None

    def full_latent(self, sampled: torch.Tensor) -> torch.Tensor:
        """The latent to decode: any latent prefix, then the sampled one."""
        if self.latent_prefix is None:
            return sampled
        return torch.cat([self.latent_prefix.to(sampled), sampled], dim=2)

    def carry(self, latent: torch.Tensor) -> Optional[Carry]:
        """For the interact recipe: the window a following segment continues from."""
        if not self.carry_latents:
            return None
        window = latent[:, :, -self.carry_latents:]
        return Carry(window, window[:, :, :1] if self.first_latent is None else self.first_latent)

    def compose(self, decoded: torch.Tensor) -> torch.Tensor:
        """The result frames: prefix + decoded[skip:]."""
        frames = decoded[self.skip:]
        if self.prefix is not None and len(self.prefix):
            frames = torch.cat([self.prefix.to(frames.device), frames])
        return frames


def aspect_h_div_w(aspect: Optional[str], width: int, height: int) -> Optional[float]:
    """None (the preset's template), 'auto' (the input's own h/w) or 'W:H' -> h/w for the schedule."""
    if aspect is None:
        return None
    if aspect == "auto":
        return height / width
    try:
        w, h = (float(part) for part in aspect.split(":"))
        if w > 0 and h > 0:
            return h / w
    except ValueError:
        pass
    raise ConditioningError(f"aspect must be 'auto' or W:H such as 16:9, not {aspect!r}.")


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [1, 3, T, H, W] in [-1, 1] (to_tensor, then 2x - 1)."""
    x = frames.to(torch.float32).div(255)
    return (x * 2 - 1).permute(3, 0, 1, 2).unsqueeze(0)


def encode_raw(vae, frames: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> the VAE's raw (unquantized) latent, its posterior drawn with `seed`."""
    device = vae.proj_down.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    return vae.encode_raw_features(to_unit(frames).to(device), generator=generator)


def encode_reference(vae, frames: torch.Tensor, schedule: Schedule, seed: int) -> list[torch.Tensor]:
    """uint8 frames [T, H, W, 3] -> the per-step bits of `schedule` (the official video_encode)."""
    return encode_bits(encode_raw(vae, frames, seed), schedule)


def _sub_schedule(preset: Preset, frames: int, h_div_w: Optional[float]) -> Schedule:
    """The schedule of the leading `frames` (any key of the preset's table, not only released lengths)."""
    schedule = build_schedule(preset.schedule, frames, h_div_w)
    return replace(schedule, vae_channels=preset.transformer.vae_channels)


def image_conditioning(preset: Preset, vae, request: GenerationRequest, frames: int) -> Conditioning:
    """i2v: force the whole first-frame pyramid with the encoded image."""
    image = open_image(request.image)
    facts = {**file_facts(request.image), "width": image.width, "height": image.height}
    h_div_w = aspect_h_div_w(request.aspect, image.width, image.height)
    schedule = build_schedule(preset, frames, h_div_w)
    height, width = schedule.pixel_size
    pixels = transform_image(load_image(image, max(height, width)), height, width)
    bits = encode_reference(vae, pixels[None], _sub_schedule(preset, 1, h_div_w), request.posterior_seed)
    metadata = {"input": facts, "aspect": request.aspect or "preset", "template": schedule.template,
                "forced_scales": schedule.scales_per_clip, "encode_seed": request.posterior_seed}
    return Conditioning(schedule, bits, schedule.scales_per_clip, metadata=metadata)


def _input_frames(preset: Preset, request: GenerationRequest, reference: Optional[Reference], pixel_size,
                  window: int) -> tuple:
    """(frames at the model's size, facts for the metadata, h/w for the schedule, window start, selection).

    From a file: `from_start` takes the official stretched selection of the first seconds
    (engine.media.videos.read_start); otherwise frames are resampled by time, all of them when
    the input goes into the output, else only the window's (read_resampled with a seek).
    """
    if reference is not None:
        facts = dict(reference.source)
        frames = _pad_window(reference.frames, window, facts, preset)
        start = 0 if request.from_start else len(frames) - window
        return frames, facts, frames.shape[1] / frames.shape[2], start, {"start_frame": start}
    size = {}

    def size_for(width: int, height: int) -> tuple[int, int]:
        size["h_div_w"] = aspect_h_div_w(request.aspect, width, height)
        return pixel_size(size["h_div_w"])

    path = request.video
    if request.from_start:
        seconds = (window - 1) / preset.fps
        frames, facts = videos.read_start(path, preset.fps, seconds, window, size_for, transform_image)
        selection = {"selection": "official: linspace(0, ceil(fps*seconds)-1, n), rounded down", "start_frame": 0}
    else:
        frames, facts = videos.read_resampled(path, preset.fps, size_for, transform_image,
                                              last=window if request.only_new else None)
        selection = {"selection": "time: source frame floor(k*fps_in/fps)",
                     "start_frame": max(0, facts.pop("resampled_frames") - window)}
    sources = facts.pop("source_frames")
    facts = {**file_facts(path), **facts}
    frames = _pad_window(frames, window, facts, preset)
    sources += sources[-1:] * (len(frames) - len(sources))  # a padded last frame
    start = 0 if request.from_start else len(frames) - window
    return frames, facts, size["h_div_w"], start, {**selection, "source_frames": sources[start:start + window]}


def _pad_window(frames: torch.Tensor, window: int, facts: dict, preset: Preset) -> torch.Tensor:
    """Refuse inputs shorter than the window; a clip exactly (window - 1) / fps long gets its last frame
    repeated (it resamples to one frame short; the reference stretches it over the window)."""
    count = len(frames)
    if count == window - 1 and window > 1:
        return torch.cat([frames, frames[-1:]])
    if count < window:
        name = facts.get("name", "the video")
        raise ConditioningError(
            f"{name} is too short ({count / preset.fps:.2f} s): extending with {preset.name} needs at least "
            f"{(window - 1) / preset.fps:g} s ({window} frames at {preset.fps} fps) to condition on."
        )
    return frames


def forced_conditioning(preset: Preset, vae, request: GenerationRequest,
                        reference: Optional[Reference]) -> Conditioning:
    """extend (`forced` continuation): force every clip but the last with the encoded window of the input."""
    frames, facts, h_div_w, start, selection = _input_frames(
        preset, request, reference, lambda r: extend_layout(preset, r)[0].pixel_size, continuation_window(preset)[0])
    schedule, window, forced = extend_layout(preset, h_div_w)
    if tuple(frames.shape[1:3]) != schedule.pixel_size:
        raise ConditioningError(f"reference frames are {tuple(frames.shape[1:3])}, the model needs {schedule.pixel_size}")
    window_frames = frames[start:start + window]
    prefix = None if request.only_new or request.from_start else frames[:start]
    bits = encode_reference(vae, window_frames, _sub_schedule(preset, window, h_div_w), request.posterior_seed)
    skip = window if request.only_new else 0
    metadata = {"input": facts, "aspect": request.aspect or ("preset" if reference is None else "auto"),
                "template": schedule.template, "forced_scales": forced, "encode_seed": request.posterior_seed,
                "window": {**selection, "frames": window, "from_start": request.from_start},
                "new_frames": schedule.num_frames - window, "only_new": request.only_new,
                "prefix_frames": 0 if prefix is None else len(prefix)}
    return Conditioning(schedule, bits, forced, prefix=prefix, skip=skip, metadata=metadata)


def interact_conditioning(preset: Preset, vae, request: GenerationRequest,
                          reference: Optional[Reference]) -> Conditioning:
    """extend (`interact` continuation, spec §5.6): conditions, not forced bits."""
    clip, tc = preset.schedule.frames_inner_clip, preset.schedule.temporal_compression
    window, new = continuation_window(preset)
    prefix = None
    if reference is not None and reference.carry is not None:
        former, first = reference.carry.window, reference.carry.first
        facts, h_div_w = dict(reference.source), reference.frames.shape[1] / reference.frames.shape[2]
        start = None
    else:
        # The set-up step of the reference: the window's raw (unquantized) encoding is the first `former`.
        frames, facts, h_div_w, start, selection = _input_frames(
            preset, request, reference, lambda r: build_segment_schedule(preset, r).pixel_size, window)
        former = encode_raw(vae, frames[start:start + window], request.posterior_seed)
        first = former[:, :, :1]
        if not request.only_new:  # the input up to the window's end (only the window with from_start)
            prefix = frames[start if request.from_start else 0:start + window]
    schedule = build_segment_schedule(preset, h_div_w)
    if former.shape[2] != 1 + clip or tuple(former.shape[3:]) != schedule.clip_shapes[0][1:]:
        raise ConditioningError(f"an interact window is {1 + clip} latents of {schedule.clip_shapes[0][1:]}")
    recent = former[:, :, 1:]
    k = min(INTERACT_SEMANTIC_SCALE, schedule.scales_per_clip // 2)
    semantic = F.interpolate(recent, size=schedule.scales[k], mode="area")
    detail = torch.cat([first, recent[:, :, [clip - 2, clip - 1]]], dim=2)
    conditions = (ConditionTokens("semantic_condition", semantic, tuple(range(1, clip + 1)), INTERACT_ROWS[0]),
                  ConditionTokens("detail_condition", detail, (0, clip - 1, clip), INTERACT_ROWS[1]))
    decoded = 1 + tc * (2 * clip - 1)  # the window's last `clip` latents and the new ones
    metadata = {"input": facts, "recipe": "interact", "conditions": {"semantic_scale": k, "rope_rows": INTERACT_ROWS},
                "forced_scales": 0, "encode_seed": request.posterior_seed, "new_frames": new, "only_new": request.only_new,
                "prefix_frames": 0 if prefix is None else len(prefix)}
    if start is not None:
        metadata["window"] = {**selection, "frames": window, "from_start": request.from_start}
    return Conditioning(schedule, prefix=prefix, skip=decoded - new, metadata=metadata, conditions=conditions,
                        latent_prefix=recent, text_frames=window, carry_latents=1 + clip, first_latent=first)


# How a preset continues a video (Preset.continuation) -> its recipe.
CONTINUATIONS = {"forced": forced_conditioning, "interact": interact_conditioning}


def resolve(preset: Preset, vae, request: GenerationRequest, frames: int,
            reference: Optional[Reference] = None) -> Conditioning:
    """The conditioning of any request; t2v/t2i force nothing. An extend request makes one
    continuation step (engine.generate.segments.plan_segments splits longer ones)."""
    if request.mode == "extend":
        if request.video is None and reference is None:
            raise ConditioningError("extend needs a video.")
        if request.seconds is not None and extend_steps(preset, request.seconds) != 1:
            raise ConditioningError(f"one extend run adds {float(step_seconds(preset)):g} s; "
                                    "engine.generate.segments.plan_segments chains several.")
        return CONTINUATIONS[preset.continuation](preset, vae, request, reference)
    if request.mode == "i2v":
        if request.image is None:
            raise ConditioningError("i2v needs an image.")
        cond = image_conditioning(preset, vae, request, frames)
    else:
        cond = Conditioning(build_schedule(preset, frames))
    if uses_interact(preset):  # an interact story continues this video's last latent window
        cond = replace(cond, carry_latents=1 + preset.schedule.frames_inner_clip)
    return cond
