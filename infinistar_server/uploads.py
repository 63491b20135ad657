"""Uploaded input references: size-limited, type-checked by their bytes, stored under a random name.

The client's file name is never used for a path; the kind (image for i2v, video for extend) comes
from the file's signature, then the engine's own input check (the CLI's) decodes its header.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from engine import InfinistarError
from infinistar_server.schemas import FieldError

CHUNK = 1 << 20
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"))
SUPPORTED = "an image (PNG, JPEG, WebP, GIF, BMP) or a video (MP4, MOV, WebM, MKV)"


class UploadTooLarge(FieldError):
    """An upload over the server's limit (HTTP 413)."""


def sniff(head: bytes) -> Optional[tuple[str, str]]:
    """(kind, suffix) of a file from its first bytes: ("image", ".png"), ("video", ".mp4"), or None."""
    for signature, suffix in IMAGE_SIGNATURES:
        if head.startswith(signature):
            return "image", suffix
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", ".webp"
    if head[4:8] == b"ftyp":
        return "video", ".mov" if head[8:10] == b"qt" else ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", ".mkv"
    return None


async def save_upload(upload, directory: Path, stem: str, limit: int) -> tuple[str, Path]:
    """Copy a starlette UploadFile into `directory` as `stem` + its real suffix; (kind, path)."""
    head = await upload.read(16)
    found = sniff(head)
    if found is None:
        raise FieldError("input_reference", f"the upload is not {SUPPORTED}")
    kind, suffix = found
    path = directory / f"{stem}{suffix}"
    size = len(head)
    try:
        with open(path, "wb") as handle:
            handle.write(head)
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge("input_reference", f"the upload is larger than the limit of {limit >> 20} MiB")
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return kind, path


def check_upload(mode: str, path: Path) -> None:
    """The CLI's early input check (header decode); a bad file is removed and named."""
    from engine import check_input  # torch: only when an input arrives

    try:
        check_input(mode, path)
    except InfinistarError as error:
        path.unlink(missing_ok=True)
        message = str(error).replace(str(path), "the upload").replace(path.name, "the upload")
        raise FieldError("input_reference", message) from None
