"""`infinistar info FILE`: what a generated file is and how it was made."""
from __future__ import annotations

import json

import click

from engine import video_io
from infinistar_cli.config import option


def _describe_media(media: dict) -> str:
    size = f"{media['width']}x{media['height']}"
    if media["kind"] == "image":
        return f"image, {media['format']} {size}"
    parts = [f"video, {media['codec']} {size}"]
    if media.get("frames"):
        parts.append(f"{media['frames']} frames")
    if media.get("fps"):
        parts.append(f"{media['fps']:g} fps")
    if media.get("duration"):
        parts.append(f"{media['duration']:.2f} s")
    return ", ".join(parts)


@click.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@option("--json", "json_output", is_flag=True, help="Print one JSON object.")
def info(file: str, json_output: bool) -> None:
    """Show the generation settings stored in a FILE written by infinistar (MP4 or PNG)."""
    media = video_io.media_info(file)
    metadata = video_io.read_metadata(file)
    if json_output:
        click.echo(json.dumps({"path": file, "media": media, "metadata": metadata}, ensure_ascii=False, default=str))
        return
    rows = [("file", file), ("media", _describe_media(media))]
    first = ("prompt", "seed", "mode", "model")
    for key in first + tuple(sorted(k for k in metadata if k not in first)):
        if key in metadata:
            value = metadata[key]
            plain = isinstance(value, str) and value != ""
            rows.append((key, value if plain else json.dumps(value, ensure_ascii=False)))
    if not metadata:
        rows.append(("metadata", "none (not written by infinistar?)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
