"""Small input files for the i2v/extend tests: patterned videos, odd images, broken files."""
from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from engine.media.video_io import write_mp4


def pattern_frames(count: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [count, H, W, 3]: a smooth gradient whose brightness encodes the frame index."""
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 2 + y)[..., None] + np.array([0, 40, 80]) + seed * 7
    frames = [(base + 12 * i) % 200 + 20 for i in range(count)]
    return np.stack(frames).astype(np.uint8)


def flat_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 frames of one grey level each: 10, 20, 30, ... (survive H.264 almost exactly)."""
    levels = (10 + 10 * np.arange(count)) % 250
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).astype(np.uint8).copy()


def write_video(path: Path, frames: np.ndarray, fps: int = 16) -> Path:
    return write_mp4(frames, path, fps, overwrite=True, crf=0)


def write_image(path: Path, width: int = 150, height: int = 100, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.RandomState(seed)
    if mode == "I;16":
        Image.fromarray((rng.rand(height, width) * 65535).astype(np.uint16)).save(path)
    elif mode == "RGBA":
        array = (rng.rand(height, width, 4) * 255).astype(np.uint8)
        array[: height // 2, :, 3] = 0  # top half fully transparent
        Image.fromarray(array, "RGBA").save(path)
    else:
        Image.fromarray((rng.rand(height, width, 3) * 255).astype(np.uint8), "RGB").save(path)
    return path


def write_png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG claiming width x height (a decompression bomb) without the pixel data to match."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def write_empty_video(path: Path) -> Path:
    """A valid MP4 container with a video stream but no frames."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


@functools.lru_cache(maxsize=None)
def tiny_pipeline():
    """The real tiny model, loaded once per test session (CPU)."""
    from engine.generate.pipeline import load_pipeline

    return load_pipeline("tiny", device="cpu")
