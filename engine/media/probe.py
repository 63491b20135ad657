"""What a media file is and says, without generating anything: its kind and size (`media_info`),
the generation metadata an output carries (`read_metadata`, what `infinistar info` shows), and the
early check of an i2v/extend input that runs before a model is loaded (`check_input`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from engine.errors import InfinistarError, MediaError
from engine.media.files import is_image, require_file
from engine.media.images import load_image, open_image
from engine.media.videos import open_video
from engine.media.writers import MP4_METADATA_TAG, PNG_METADATA_KEY, sidecar_path


def media_info(path: str | Path) -> dict:
    """Basic facts about a media file: kind, width, height, and for videos frames/fps/duration/codec."""
    path = require_file(path)
    if is_image(path):
        image = open_image(path, load=True)
        return {"kind": "image", "format": image.format, "width": image.width, "height": image.height,
                "mode": image.mode}
    with open_video(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        frames = stream.frames or None
        duration = container.duration / 1_000_000 if container.duration else None
        return {"kind": "video", "format": container.format.name, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "frames": frames, "fps": fps, "duration": duration,
                "codec": stream.codec_context.name}


def read_metadata(path: str | Path) -> dict:
    """Generation metadata stored in `path` (falling back to its sidecar); {} when there is none."""
    path = require_file(path)
    if is_image(path):
        text = getattr(open_image(path, load=True), "text", {}).get(PNG_METADATA_KEY)
    else:
        with open_video(path) as container:
            text = container.metadata.get(MP4_METADATA_TAG)
    for candidate in (text, _read_sidecar(path)):
        if candidate:
            try:
                value = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def _read_sidecar(path: Path) -> Optional[str]:
    try:
        return sidecar_path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _is_video(path: str | Path) -> bool:
    try:
        info = media_info(path)
    except InfinistarError:
        return False
    # FFmpeg's image2 demuxer "opens" any unknown file as a still: that is not a video.
    return info["kind"] == "video" and info["format"] != "image2" and bool(info["width"])


def check_input(mode: str, path: str | Path) -> None:
    """Early check of an i2v/extend input, before a model is loaded: an image is decoded (at
    1/8 scale where the format allows), so a truncated one fails now, not after the load."""
    if mode == "i2v":
        try:
            load_image(open_image(path), 16)
        except MediaError:
            if _is_video(path):
                raise MediaError(f"{Path(path).name} is a video; i2v needs an image (use extend to continue a "
                                 "video).") from None
            raise
    elif mode == "extend":
        if media_info(path)["kind"] != "video":
            raise MediaError(f"{Path(path).name} is an image; extend needs a video (use i2v for images).")
