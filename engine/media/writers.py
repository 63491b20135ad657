"""Writing outputs: MP4 (H.264 via PyAV, streamed or at once) and PNG (Pillow), with their metadata.

Writes are atomic (engine.media.atomic): the file and its sidecar go to hidden temp files in the target
directory and are renamed into place together, so an interrupted or failed run never leaves a
half-written output, a temp file, or a video without its sidecar.
Generation metadata (a JSON-able dict) is stored three ways: in the file itself (MP4 `comment`
tag, PNG iTXt chunk `infinistar`) and in a `<file>.json` sidecar next to it.
"""
from __future__ import annotations

import json
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np

from engine import __version__
from engine.choices import DEFAULT_CRF
from engine.errors import OutputExistsError, OutputPathError
from engine.media import atomic
from engine.media.encoding import h264

VIDEO_SUFFIX = ".mp4"
IMAGE_SUFFIX = ".png"
PNG_METADATA_KEY = "infinistar"
MP4_METADATA_TAG = "comment"


def sidecar_path(path: str | Path) -> Path:
    """`clip.mp4` -> `clip.mp4.json` (keeps `clip.mp4` and `clip.png` sidecars apart)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def check_output_path(path: str | Path, *, video: bool, overwrite: bool = False) -> Path:
    """Raise if `path` has the wrong suffix for the content, is a directory, or exists."""
    path = Path(path)
    expected = VIDEO_SUFFIX if video else IMAGE_SUFFIX
    if path.suffix.lower() != expected:
        kind = "a video" if video else "an image"
        raise OutputPathError(f"{path}: {kind} is written as {expected}, so the name must end in {expected}")
    if path.is_dir():
        raise OutputPathError(f"{path} is a directory")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; not overwriting it")
    return path


def prepare_output_dir(directory: str | Path) -> Path:
    """Create `directory` (with parents) and check that files can be created in it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"cannot create output directory {directory}: {error.strerror or error}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputPathError(f"output directory {directory} is not writable")
    # Then try it: permission bits say nothing to root, and /proc, /sys or a read-only mount
    # refuse new files whatever the bits say.
    try:
        fd, probe = tempfile.mkstemp(prefix=".infinistar-probe.", dir=directory)
    except OSError as error:
        raise OutputPathError(f"output directory {directory} is not writable: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)
    return directory


def _stage(path: Path, overwrite: bool) -> atomic.Staged:
    """A temp file for `path` (see engine.media.atomic), after the directory and no-clobber checks."""
    prepare_output_dir(path.parent)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; not overwriting it")
    return atomic.Staged(path)


def _metadata_json(metadata: dict) -> str:
    return json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str)


def _staged_sidecar(path: Path, metadata: dict) -> atomic.Staged:
    """The `<file>.json` sidecar, written to its temp file; published together with `path`."""
    staged = atomic.Staged(sidecar_path(path))
    try:
        staged.tmp.write_text(_metadata_json(metadata) + "\n", encoding="utf-8")
    except BaseException:
        staged.discard()
        raise
    return staged


def _publish_with_sidecar(staged: atomic.Staged, metadata: dict, overwrite: bool) -> Path:
    """Publish a written media temp file and its sidecar together, or neither (engine.media.atomic)."""
    try:
        sidecar = _staged_sidecar(staged.path, metadata)
    except BaseException:
        staged.discard()
        raise
    atomic.publish([staged, sidecar], overwrite)
    return staged.path


def _as_frames(frames: Any) -> np.ndarray:
    """uint8 [T, H, W, 3] numpy view of a torch tensor or array."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    return np.ascontiguousarray(frames)


class VideoWriter:
    """Streaming H.264 MP4 writer: feed uint8 chunks [t, H, W, 3], then close() to publish the file.

    yuv420p at quality `crf`, or with `lossless` RGB 4:4:4 that decodes to exactly the frames given;
    either way the file depends on the frames alone (engine.media.encoding). The settings are recorded
    in the metadata under "encoding". Used as a context manager, an exception (or Ctrl-C) inside
    the block discards everything.
    """

    def __init__(
        self,
        path: str | Path,
        fps: int | float | Fraction,
        *,
        metadata: Optional[dict] = None,
        overwrite: bool = False,
        crf: int = DEFAULT_CRF,
        lossless: bool = False,
    ) -> None:
        import av

        self.path = check_output_path(path, video=True, overwrite=overwrite)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.encoding = h264(crf, lossless)
        self.metadata = {**(metadata or {}), "encoding": self.encoding.describe()}
        self.frames_written = 0
        self._stream = None
        self._overwrite = overwrite
        self._staged = _stage(self.path, overwrite)
        try:
            # faststart moves the index to the front so players can start before the end arrives.
            self._container = av.open(str(self._staged.tmp), "w", format="mp4", options={"movflags": "+faststart"})
            self._container.metadata[MP4_METADATA_TAG] = _metadata_json(self.metadata)
            if self.metadata.get("prompt"):
                self._container.metadata["title"] = str(self.metadata["prompt"])
        except BaseException:
            self._staged.discard()
            raise

    def _open_stream(self, height: int, width: int) -> None:
        if (height % 2 or width % 2) and self.encoding.pix_fmt == "yuv420p":
            raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
        stream = self._container.add_stream(self.encoding.codec, rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, self.encoding.pix_fmt
        stream.options = self.encoding.stream_options()
        self._stream = stream

    def write(self, chunk: Any) -> None:
        """Encode frames [t, H, W, 3] uint8 (torch or numpy)."""
        import av

        frames = _as_frames(chunk)
        if self._stream is None:
            self._open_stream(frames.shape[1], frames.shape[2])
        elif (frames.shape[1], frames.shape[2]) != (self._stream.height, self._stream.width):
            raise ValueError(f"frame size changed mid-video: {frames.shape[1:3]}")
        for frame in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self._container.mux(packet)
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Flush, publish the file atomically and write the sidecar. Returns the path."""
        try:
            if self._stream is None:
                raise ValueError("no frames were written")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self.abort()
            raise
        return _publish_with_sidecar(self._staged, self.metadata, self._overwrite)

    def abort(self) -> None:
        """Drop everything written so far."""
        try:
            self._container.close()
        except Exception:  # a broken container is being thrown away anyway
            pass
        self._staged.discard()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_mp4(
    frames: Any, path: str | Path, fps: int | float, *, metadata: Optional[dict] = None,
    overwrite: bool = False, crf: int = DEFAULT_CRF, lossless: bool = False,
) -> Path:
    """Write uint8 frames [T, H, W, 3] as an H.264 MP4 at constant `fps`: yuv420p at quality `crf`,
    or RGB 4:4:4 that decodes exactly when `lossless`."""
    with VideoWriter(path, fps, metadata=metadata, overwrite=overwrite, crf=crf, lossless=lossless) as writer:
        writer.write(frames)
    return writer.path


def write_png(frame: Any, path: str | Path, *, metadata: Optional[dict] = None, overwrite: bool = False) -> Path:
    """Write one uint8 frame [H, W, 3] (or [1, H, W, 3]) as PNG with metadata text chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = check_output_path(path, video=False, overwrite=overwrite)
    array = _as_frames(frame[None] if np.ndim(frame) == 3 else frame)
    if array.shape[0] != 1:
        raise ValueError(f"a PNG holds one frame, got {array.shape[0]}")
    metadata = dict(metadata or {})
    info = PngInfo()
    info.add_itxt(PNG_METADATA_KEY, _metadata_json(metadata))
    info.add_text("Software", f"infinistar {__version__}")
    if metadata.get("prompt"):
        info.add_itxt("Description", str(metadata["prompt"]))
    staged = _stage(path, overwrite)
    try:
        with open(staged.tmp, "wb") as handle:
            Image.fromarray(array[0], "RGB").save(handle, format="PNG", pnginfo=info)
    except BaseException:
        staged.discard()
        raise
    return _publish_with_sidecar(staged, metadata, overwrite)


def write_result(result: Any, path: str | Path, overwrite: bool = False, crf: int = DEFAULT_CRF,
                 lossless: bool = False) -> Path:
    """Write a pipeline Result: MP4 when it has several frames, PNG (always exact) for a single one."""
    frames = _as_frames(result.frames)
    video = frames.shape[0] > 1
    check_output_path(path, video=video, overwrite=overwrite)
    if video:
        return write_mp4(frames, path, result.fps, metadata=result.metadata, overwrite=overwrite, crf=crf,
                         lossless=lossless)
    return write_png(frames, path, metadata=result.metadata, overwrite=overwrite)
