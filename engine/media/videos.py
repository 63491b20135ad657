"""Reading videos: decoded no further than needed, shown upright, resampled to the model's frame rate.

- `video_stream` opens a readable video (a one-line MediaError for anything FFmpeg cannot use).
- `--from-start` is the official selection (`EncodedVideoDecord.get_clip(0, seconds, n)` of
  `infer_video_480p.py`): source frames `linspace(0, ceil(fps·seconds) − 1, n)` cast to integers
  (numpy's `dtype=int`, i.e. rounded down), the first `seconds` stretched over the window's n
  frames. Decoding stops at the last of them (`read_start`).
- Otherwise frames are resampled by time (`read_resampled`): output frame k shows the source frame
  on screen at k/fps (index floor(k·src_fps/fps)); the end window an extend conditions on is the
  last n of them. When the input itself is not wanted in the output, decoding starts at a keyframe
  shortly before the window (a seek) and frame numbers come from timestamps; a stream whose
  timestamps are not regular is decoded from the start instead, which gives the same frames.
  `read_video` is the same reader at the video's own rate and size.
- Rotation: a display matrix (phone videos) is applied as players do, in quarter turns
  (`VideoFrame.rotation`, counter-clockwise degrees).
"""
from __future__ import annotations

import math
from collections import deque
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from engine.errors import MediaError
from engine.media.files import require_file
from engine.media.images import to_tensor

if TYPE_CHECKING:
    import torch

SizeFor = Callable[[int, int], tuple[int, int]]  # (display width, height) -> model (H, W)
Transform = Callable[[object, int, int], "torch.Tensor"]  # (PIL image, H, W) -> uint8 [H, W, 3]
# A seek pays off only when it skips at least this many seconds; it lands this far before the window.
SEEK_MIN_SKIP_S = 4.0
SEEK_MARGIN_S = 1.0


class ShortVideoError(MediaError):
    """The input is shorter than the window needs."""


def open_video(path: Path):
    """An opened PyAV container with a video stream of known size, else a one-line MediaError."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise MediaError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path} has no video stream")
    context = container.streams.video[0].codec_context
    if not (context.width and context.height):  # what FFmpeg makes of a text file or a broken header
        container.close()
        raise MediaError(f"{path} is not a readable video (no frame size)")
    return container


@contextmanager
def video_stream(path: str | Path):
    """(first video stream, container) of a readable video; decode errors inside the block become
    a one-line MediaError and the container is always closed."""
    import av

    path = require_file(path)
    container = open_video(path)
    try:
        yield container.streams.video[0], container
    except av.error.FFmpegError as error:
        raise MediaError(f"cannot decode {path}: {getattr(error, 'strerror', None) or error}") from None
    finally:
        container.close()


def read_video(path: str | Path) -> tuple[torch.Tensor, Optional[float]]:
    """All frames of a video as a torch uint8 tensor [T, H, W, 3] (RGB, upright) and its frame rate
    (None when none is stored): `read_resampled` at the video's own rate and size."""
    frames, facts = read_resampled(path, None, lambda width, height: (height, width),
                                   lambda image, height, width: to_tensor(image))
    return frames, facts["fps"]


def official_indices(src_fps: float, seconds: float, count: int) -> list[int]:
    """Source frames of the official `get_clip(0, seconds, count)` (the video is long enough)."""
    end = math.ceil(src_fps * seconds)
    return [int(i) for i in np.linspace(0, end - 1, count, dtype=int)]


def time_indices(ratio: Fraction, first: int, stop: int) -> list[int]:
    """Source frames of output frames first..stop-1 at `ratio` source frames per output frame."""
    return [math.floor(k * ratio) for k in range(first, stop)]


def upright(image, degrees: float):
    """A PIL image turned by `degrees` counter-clockwise (nearest quarter turn), as players show it."""
    from PIL import Image

    turns = round(degrees / 90) % 4
    if not turns:
        return image
    return image.transpose({1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180,
                            3: Image.Transpose.ROTATE_270}[turns])


def _stack(frames: list) -> torch.Tensor:
    import torch  # importing this module (the front ends' engine.video_io) stays free of torch

    return torch.stack(frames)


def _rotation(frame) -> float:
    return float(getattr(frame, "rotation", 0) or 0)


class _Shaper:
    """Turns decoded frames into model-size uint8 tensors; picks the size at the first frame."""

    def __init__(self, size_for: SizeFor, transform: Transform) -> None:
        self.size_for, self.transform = size_for, transform
        self.size: Optional[tuple[int, int]] = None
        self.rotation = 0

    def __call__(self, frame) -> torch.Tensor:
        image = upright(frame.to_image().convert("RGB"), _rotation(frame))
        if self.size is None:
            self.rotation = round(_rotation(frame) / 90) % 4 * 90  # the turn applied, counter-clockwise
            self.size = self.size_for(image.width, image.height)
        return self.transform(image, *self.size)


def _source_fps(stream) -> Optional[Fraction]:
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate).limit_denominator(1001) if rate else None


def _facts(src_fps: Optional[Fraction], frames: Optional[int], decoded: int, fps: Optional[int],
           shaper: _Shaper) -> dict:
    """What the metadata records of an input: its frame rate, length (when read to the end),
    frames decoded, rotation applied."""
    facts = {"fps": float(src_fps) if src_fps else None, "decoded_frames": decoded}
    if frames is not None:
        facts.update(frames=frames, duration=round(frames / float(src_fps), 4) if src_fps else None)
    if shaper.rotation:
        facts["rotation"] = shaper.rotation
    if not src_fps:
        facts["note"] = f"no frame rate stored; read as {fps} fps" if fps else "no frame rate stored"
    return facts


def read_start(path: str | Path, fps: int, seconds: float, count: int, size_for: SizeFor,
               transform: Transform) -> tuple[torch.Tensor, dict]:
    """The official `--from-start` window: `count` frames stretched over the first `seconds`."""
    shaper = _Shaper(size_for, transform)
    with video_stream(path) as (stream, container):
        src_fps = _source_fps(stream) or Fraction(fps)
        indices = official_indices(float(src_fps), seconds, count)
        wanted, kept, decoded = set(indices), {}, 0
        for frame in container.decode(stream):
            if decoded in wanted:
                kept[decoded] = shaper(frame)
            decoded += 1
            if decoded > indices[-1]:
                break  # the rest of the video is not needed
    if decoded <= indices[-1]:
        raise ShortVideoError(
            f"{Path(path).name} is too short ({decoded / float(src_fps):.2f} s): --from-start conditions on "
            f"its first {seconds:g} s.")
    facts = _facts(src_fps, None, decoded, fps, shaper)
    return _stack([kept[i] for i in indices]), {**facts, "source_frames": indices}


def read_resampled(path: str | Path, fps: Optional[int], size_for: SizeFor, transform: Transform,
                   last: Optional[int] = None) -> tuple[torch.Tensor, dict]:
    """The video resampled to `fps` by time (see the module doc; None: every frame), transformed to
    the model size.

    `last`: only the last `last` output frames are wanted (a seek near the end when it pays off).
    """
    if last and fps:
        shaper = _Shaper(size_for, transform)
        with video_stream(path) as (stream, container):
            src_fps = _source_fps(stream)
            tail = _read_tail(stream, container, src_fps / fps, last, shaper) if src_fps else None
        if tail is not None:
            frames, count, decoded, indices = tail
            facts = _facts(src_fps, count, decoded, fps, shaper)
            total = math.ceil(count / (src_fps / fps))
            return frames, {**facts, "resampled_frames": total, "source_frames": indices, "seek": True}
    shaper = _Shaper(size_for, transform)
    with video_stream(path) as (stream, container):
        src_fps = _source_fps(stream)
        ratio = src_fps / fps if src_fps and fps else Fraction(1)
        kept: deque = deque(maxlen=last)  # (source index, frame); unbounded without `last`
        decoded = k = 0
        for frame in container.decode(stream):
            image = None
            while math.floor(k * ratio) <= decoded:
                if image is None:
                    image = shaper(frame)
                kept.append((decoded, image))
                k += 1
            decoded += 1
    if not decoded:
        raise MediaError(f"{path} contains no decodable frames")
    facts = {**_facts(src_fps, decoded, decoded, fps, shaper), "resampled_frames": k}
    return _stack([image for _, image in kept]), {**facts, "source_frames": [i for i, _ in kept]}


def _duration(stream, container) -> Optional[float]:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


def _read_tail(stream, container, ratio: Fraction, last: int, shaper: _Shaper):
    """(frames, source frame count, frames decoded, source indices) of the last `last` output frames,
    decoding from a keyframe shortly before them; None when that cannot be done exactly."""
    duration, src_fps, base = _duration(stream, container), _source_fps(stream), stream.time_base
    if not duration or not src_fps or not base:
        return None
    span = float((last + 1) * ratio / src_fps) + SEEK_MARGIN_S  # seconds the window covers, and a margin
    target = duration - span
    if target < SEEK_MIN_SKIP_S:
        return None
    frames = container.decode(stream)
    first = next(frames, None)
    if first is None or first.pts is None:
        return None
    origin = first.pts
    shaper(first)  # the size (and rotation) come from the first frame
    container.seek(origin + int(target / base), stream=stream, backward=True, any_frame=False)
    kept: deque = deque(maxlen=last + 1)
    decoded, previous = 1, None
    for frame in container.decode(stream):
        decoded += 1
        if frame.pts is None:
            return None
        index = round((frame.pts - origin) * base * src_fps)
        if previous is not None and index != previous + 1:
            return None  # irregular timestamps: frame numbers cannot be trusted
        previous = index
        k = math.ceil(index / ratio)
        if math.floor(k * ratio) == index:  # some output frame shows this source frame
            kept.append((index, shaper(frame)))
    if previous is None:
        return None
    count = previous + 1
    total = math.ceil(count / ratio)
    indices = time_indices(ratio, max(0, total - last), total)
    images = dict(kept)
    if not all(i in images for i in indices):
        return None  # the seek landed after the window's first frame
    return _stack([images[i] for i in indices]), count, decoded, indices
