"""The media names the front ends use (`engine.video_io`), gathered from the rooms of engine.media:
writing outputs (writers), reading images and videos (images, videos) and what a file is and
says (probe). Nothing is defined here."""
from __future__ import annotations

from engine.media.images import read_image
from engine.media.probe import media_info, read_metadata
from engine.media.videos import read_video
from engine.media.writers import (
    IMAGE_SUFFIX, VIDEO_SUFFIX, VideoWriter, check_output_path, prepare_output_dir, sidecar_path, write_mp4,
    write_png, write_result,
)

__all__ = ["IMAGE_SUFFIX", "VIDEO_SUFFIX", "VideoWriter", "check_output_path", "media_info", "prepare_output_dir",
           "read_image", "read_metadata", "read_video", "sidecar_path", "write_mp4", "write_png", "write_result"]
