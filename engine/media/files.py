"""What an input path is before anything decodes it: a readable file, a still image by its
signature or name, and its name, size and sha256 (recorded in an output's metadata)."""
from __future__ import annotations

import os
from pathlib import Path

from engine.digests import sha256_file
from engine.errors import MediaError

# Names that say "still image" whatever the bytes are.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def require_file(path: str | Path) -> Path:
    """`path` as a Path, or a MediaError saying why it cannot be read (missing, not a file, no permission)."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{path} is not readable")
    return path


def is_image(path: Path) -> bool:
    """A still image by its signature, or by its name: a `.png` that is not an image is refused by
    the image reader rather than probed as a video (FFmpeg opens a text file named .png)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    # Known still-image signatures: PNG, JPEG, GIF, BMP, WebP (RIFF....WEBP), TIFF.
    return (
        head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or path.suffix.lower() in IMAGE_SUFFIXES
    )


def file_facts(path: str | Path) -> dict:
    """Name, size in bytes and sha256 of an input file (recorded in the output's metadata)."""
    path = Path(path)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
