"""Conditioning on a reference image or video: what i2v, extend and story continuations force.

A request resolves to a `Conditioning` (schedule, bits of the encoded reference, number of leading
scales those bits force); the pipeline then makes the same `sample_latent` call as t2v.

- i2v (pipeline spec §5.4): the image goes through the official `transform` (floor of the resized
  side, LANCZOS, centre crop, [-1, 1]), is VAE-encoded and quantized into the first-frame pyramid;
  every scale of that pyramid is forced (the reference's gt_leak 15 at 720p, 14 at 480p).
- extend (spec §5.5, generalised through the schedule): the output schedule is the preset's longest
  video; every clip but the last is forced from the conditioning window, the last clip is sampled.
  480p: 161 frames, window 81 (5 s: image pyramid + first clip), 80 new frames, as the reference.
  720p has one clip per video, so its window is a single frame: continuation from the last frame
  (i2v-like; motion is not carried over). tiny: 33 frames, window 17, 16 new.
  The window comes from the end of the input (the reference takes the first 5 s; `from_start`).
- The VAE posterior sample: the reference draws ε from the unseeded global RNG; here it comes from
  a separate `torch.Generator` on the VAE's device seeded with the request seed, so one seed fixes
  the whole output.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from engine import video_io
from engine.errors import InfinistarError, MediaError
from engine.presets import Preset
from engine.quantizer import encode_bits
from engine.schedule import Schedule, build_schedule

# Above this many pixels an image is shrunk cheaply (JPEG DCT scaling, else `reduce`) to about twice
# the needed size before the exact transform; at or below it the result is the official transform's.
PRESHRINK_PIXELS = 16_000_000


class ConditioningError(InfinistarError):
    """A reference image/video or a conditioning option that cannot be used."""


@dataclass(frozen=True)
class Reference:
    """Frames to condition on: uint8 RGB [T, H, W, 3] at the model's fps and pixel size.

    `source` describes where they came from (recorded in the metadata).
    """

    frames: torch.Tensor
    source: dict = field(default_factory=dict)


@dataclass
class Conditioning:
    """What a request forces. `prefix` frames go before the decoded ones in the result; the first
    `skip` decoded frames are left out of it (`only_new`)."""

    schedule: Schedule
    forced_bits: Optional[list[torch.Tensor]] = None
    forced_scales: int = 0
    prefix: Optional[torch.Tensor] = None
    skip: int = 0
    metadata: dict = field(default_factory=dict)

    def compose(self, decoded: torch.Tensor) -> torch.Tensor:
        """The result frames: prefix + decoded[skip:]."""
        frames = decoded[self.skip:]
        if self.prefix is not None and len(self.prefix):
            frames = torch.cat([self.prefix.to(frames.device), frames])
        return frames


# ----------------------------------------------------------------------------- facts and options


def file_facts(path: str | Path) -> dict:
    """Name, size in bytes and sha256 of an input file (recorded in the output's metadata)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


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


def extend_layout(preset: Preset, h_div_w: Optional[float] = None) -> tuple[Schedule, int, int]:
    """(schedule, window frames, forced scales) of one continuation step with `preset`.

    The schedule is the preset's longest video; the window is every clip but the last.
    """
    schedule = build_schedule(preset, max(preset.frames), h_div_w)
    forced = schedule.scales_per_clip * (schedule.num_clips - 1)
    window_latents = schedule.latent_frames - schedule.clip_shapes[-1][0]
    window = 1 + preset.schedule.temporal_compression * (window_latents - 1)
    return schedule, window, forced


def _step_seconds(preset: Preset) -> Fraction:
    schedule, window, _ = extend_layout(preset)
    return Fraction(schedule.num_frames - window, preset.fps)


def extend_steps(preset: Preset, seconds: Optional[int]) -> int:
    """How many continuation steps make `seconds` of new footage (None: one)."""
    step = _step_seconds(preset)
    if seconds is None:
        return 1
    steps = seconds / step
    if steps.denominator != 1 or steps < 1:
        raise ConditioningError(
            f"{preset.name} extends a video by {float(step):g} s per step; --seconds must be a multiple "
            f"of {float(step):g} (use --then for a new prompt per step)."
        )
    return int(steps)


# ----------------------------------------------------------------------------- images


def _resized_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """The official transform's resize: the side that fits is the target, the other floored."""
    if width / height <= target_w / target_h:
        size = (target_w, int(target_w / (width / height)))
    else:
        size = (int((width / height) * target_h), target_h)
    # Float error can floor a matching side one pixel short (spec pitfall 20): never below the target.
    return max(size[0], target_w), max(size[1], target_h)


def transform_image(image, height: int, width: int) -> torch.Tensor:
    """PIL RGB image -> uint8 [height, width, 3]: official resize (LANCZOS) and centre crop."""
    from PIL import Image

    new_w, new_h = _resized_size(image.width, image.height, width, height)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), resample=Image.LANCZOS)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    array = np.array(image, dtype=np.uint8)[top:top + height, left:left + width]
    return torch.from_numpy(np.ascontiguousarray(array))


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [1, 3, T, H, W] in [-1, 1] (to_tensor, then 2x - 1)."""
    x = frames.to(torch.float32).div(255)
    return (x * 2 - 1).permute(3, 0, 1, 2).unsqueeze(0)


def open_image(path: str | Path):
    """Open an image lazily (header only; no size limit yet: `load_image` decides how to decode)."""
    from PIL import Image, UnidentifiedImageError

    path = video_io._require_file(path)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None
            return Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise MediaError(f"cannot read image {path}: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def load_image(image, min_side: int):
    """Decode an opened image to 8-bit RGB, shrinking huge ones without a full-size decode.

    Above PRESHRINK_PIXELS, JPEGs are decoded at 1/2..1/8 scale (`draft`) and other formats up to
    Pillow's own bomb limit are decoded and `reduce`d, keeping at least 2 * `min_side` pixels on
    the short side; larger non-JPEG images are refused.
    """
    from PIL import Image

    name = Path(image.filename or "image").name
    width, height = image.size
    factor = min(width, height) // (2 * min_side) if width * height > PRESHRINK_PIXELS else 1
    if factor >= 2:
        if image.format == "JPEG":
            image.draft(None, (width // factor, height // factor))
        elif Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
            raise MediaError(
                f"{name} is {width}x{height}: too large to decode (at most {Image.MAX_IMAGE_PIXELS // 1_000_000} "
                "megapixels except for JPEG); scale it down first."
            )
    try:
        image.load()
        rgb = video_io.image_to_rgb(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise MediaError(f"cannot decode image {name}: {error}") from None
    factor = min(rgb.size) // (2 * min_side) if factor >= 2 else 1
    return rgb.reduce(factor) if factor >= 2 else rgb


# ----------------------------------------------------------------------------- videos


def read_video_resampled(path: str | Path, fps: int, size_for) -> tuple[torch.Tensor, dict]:
    """Decode a video with PyAV, resampled to `fps` and transformed to the model size, streaming.

    `size_for(width, height) -> (H, W)` picks the pixel size from the stored frame size. Output
    frame k shows the source frame on screen at time k/fps (index floor(k * src_fps / fps));
    only transformed frames are kept, never the full-size decode.
    """
    import av
    from PIL import Image

    path = video_io._require_file(path)
    container = video_io._open_video(path)
    try:
        stream = container.streams.video[0]
        src_fps = stream.average_rate or stream.guessed_rate
        ratio = Fraction(src_fps).limit_denominator(1001) / fps if src_fps else Fraction(1)
        height, width = size_for(stream.codec_context.width or 1, stream.codec_context.height or 1)
        kept, decoded, k = [], 0, 0
        for frame in container.decode(stream):
            image = None
            while math.floor(k * ratio) <= decoded:
                if image is None:
                    image = transform_image(frame.to_image().convert("RGB"), height, width)
                kept.append(image)
                k += 1
            decoded += 1
    except av.error.FFmpegError as error:
        raise MediaError(f"cannot decode {path}: {getattr(error, 'strerror', None) or error}") from None
    finally:
        container.close()
    if not decoded:
        raise MediaError(f"{path} contains no decodable frames")
    facts = {"fps": float(src_fps) if src_fps else None, "frames": decoded,
             "duration": round(decoded / float(src_fps), 4) if src_fps else None}
    if not src_fps:
        facts["note"] = f"no frame rate stored; read as {fps} fps"
    return torch.stack(kept), facts


def check_input(mode: str, path: str | Path) -> None:
    """Cheap early check of an i2v/extend input (header only), before a model is loaded."""
    if mode == "i2v":
        open_image(path).close()
    elif mode == "extend":
        if video_io.media_info(path)["kind"] != "video":
            raise MediaError(f"{Path(path).name} is an image; extend needs a video (use i2v for images).")


# ----------------------------------------------------------------------------- resolution


def encode_reference(vae, frames: torch.Tensor, schedule: Schedule, seed: int) -> list[torch.Tensor]:
    """uint8 frames [T, H, W, 3] -> the per-step bits of `schedule` (the official video_encode)."""
    device = vae.proj_down.weight.device
    generator = torch.Generator(device=device).manual_seed(seed)
    raw = vae.encode_raw_features(to_unit(frames).to(device), generator=generator)
    return encode_bits(raw, schedule)


def _sub_schedule(preset: Preset, frames: int, h_div_w: Optional[float]) -> Schedule:
    """The schedule of the leading `frames` (any key of the preset's table, not only released lengths)."""
    schedule = build_schedule(preset.schedule, frames, h_div_w)
    return replace(schedule, vae_channels=preset.transformer.vae_channels)


def image_conditioning(pipeline, request, frames: int) -> Conditioning:
    """i2v: force the whole first-frame pyramid with the encoded image."""
    preset: Preset = pipeline.preset
    image = open_image(request.image)
    facts = {**file_facts(request.image), "width": image.width, "height": image.height}
    h_div_w = aspect_h_div_w(request.aspect, image.width, image.height)
    schedule = build_schedule(preset, frames, h_div_w)
    height, width = schedule.pixel_size
    pixels = transform_image(load_image(image, max(height, width)), height, width)
    image_schedule = _sub_schedule(preset, 1, h_div_w)
    bits = encode_reference(pipeline.components.vae, pixels[None], image_schedule, request.seed)
    metadata = {"input": facts, "aspect": request.aspect or "preset", "template": schedule.template,
                "forced_scales": schedule.scales_per_clip, "encode_seed": request.seed}
    return Conditioning(schedule, bits, schedule.scales_per_clip, metadata=metadata)


def video_conditioning(pipeline, request, reference: Optional[Reference]) -> Conditioning:
    """extend: force every clip but the last with the encoded window of the input."""
    preset: Preset = pipeline.preset
    if request.seconds is not None and extend_steps(preset, request.seconds) != 1:
        raise ConditioningError(f"one extend run adds {float(_step_seconds(preset)):g} s; "
                                "engine.story.run_story chains several.")
    if reference is None:
        size = {}

        def size_for(width: int, height: int) -> tuple[int, int]:
            size["h_div_w"] = aspect_h_div_w(request.aspect, width, height)
            return extend_layout(preset, size["h_div_w"])[0].pixel_size

        frames, facts = read_video_resampled(request.video, preset.fps, size_for)
        facts = {**file_facts(request.video), **facts}
        h_div_w = size["h_div_w"]
    else:
        frames, facts = reference.frames, dict(reference.source)
        h_div_w = frames.shape[1] / frames.shape[2]
    schedule, window, forced = extend_layout(preset, h_div_w)
    if tuple(frames.shape[1:3]) != schedule.pixel_size:
        raise ConditioningError(f"reference frames are {tuple(frames.shape[1:3])}, the model needs {schedule.pixel_size}")
    count = len(frames)
    seconds = (window - 1) / preset.fps
    # A clip of exactly `seconds` (e.g. 80 frames for 5 s at 16 fps) resamples to one frame short of
    # the window; the reference stretches it over the window, we repeat its last frame.
    if count == window - 1 and window > 1:
        frames = torch.cat([frames, frames[-1:]])
    elif count < window:
        name = facts.get("name", "the video")
        raise ConditioningError(
            f"{name} is too short ({count / preset.fps:.2f} s): extending with {preset.name} needs at least "
            f"{seconds:g} s ({window} frames at {preset.fps} fps) to condition on."
        )
    start = 0 if request.from_start else len(frames) - window
    window_frames = frames[start:start + window]
    prefix = None if request.only_new or request.from_start else frames[:start]
    bits = encode_reference(pipeline.components.vae, window_frames, _sub_schedule(preset, window, h_div_w),
                            request.seed)
    skip = window if request.only_new else 0
    metadata = {"input": facts, "aspect": request.aspect or ("preset" if reference is None else "auto"),
                "template": schedule.template, "forced_scales": forced, "encode_seed": request.seed,
                "window": {"start_frame": start, "frames": window, "from_start": request.from_start},
                "new_frames": schedule.num_frames - window, "only_new": request.only_new,
                "prefix_frames": 0 if prefix is None else len(prefix)}
    return Conditioning(schedule, bits, forced, prefix=prefix, skip=skip, metadata=metadata)


def resolve(pipeline, request, frames: int, reference: Optional[Reference] = None) -> Conditioning:
    """The conditioning of any request; t2v/t2i force nothing."""
    if request.mode == "i2v":
        if request.image is None:
            raise ConditioningError("i2v needs an image.")
        return image_conditioning(pipeline, request, frames)
    if request.mode == "extend":
        if request.video is None and reference is None:
            raise ConditioningError("extend needs a video.")
        return video_conditioning(pipeline, request, reference)
    return Conditioning(build_schedule(pipeline.preset, frames))
