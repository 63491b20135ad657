"""The sentences a person reads about a run: what was loaded, what was asked, what was written."""
from __future__ import annotations

from typing import Any, Optional

ECHO_LENGTH = 100  # characters of a prompt echoed back; the file's metadata keeps all of it
# Stages of a run in the order they happen, with their name in a summary line.
TIMING_NAMES = (("load", "load"), ("encode_reference", "input"), ("encode_text", "prompt"),
                ("sample", "sample"), ("decode", "decode"), ("write", "write"))
ALWAYS_SHOWN = {"load", "sample", "decode", "write"}
SHOWN_FROM = 0.05  # seconds: shorter optional stages are left out of the summary


def gibibytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def model_line(info: Any) -> str:
    """`model tiny (built in, PATH) on cpu, float32, offload none, weights bf16`: what was resolved.

    `info` is an engine.request.ModelInfo (or anything with its fields)."""
    where = f"built in, {info.source}" if info.built_in else info.source
    device = info.device
    if info.device_name:
        memory = ""
        if info.free_bytes is not None and info.total_bytes:
            memory = f", {gibibytes(info.free_bytes)} free of {gibibytes(info.total_bytes)}"
        device = f"{device} ({info.device_name}{memory})"
    compiled = ", compiled blocks" if info.compiled else ""
    return (f"model {info.name} ({where}) on {device}, {info.dtype}, offload {info.offload}, "
            f"weights {info.weights}{compiled}")


def shorten(prompt: str, limit: int = ECHO_LENGTH) -> str:
    """The prompt on one line, cut to `limit` characters with a note of its length."""
    flat = " ".join(prompt.split())
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit].rstrip()}… ({len(flat):,} characters)"


def prompt_echo(label: str, seed: int, prompt: str) -> str:
    return f"{label} seed {seed}: {shorten(prompt)}".strip()


def truncation_note(label: str, metadata: dict) -> Optional[str]:
    """Says when the text encoder cut the prompt: None when it kept every token."""
    tokens, limit = metadata.get("prompt_tokens"), metadata.get("text_max_tokens")
    if not tokens or not limit or tokens <= limit:
        return None
    return (f"{label} note: the prompt is {tokens:,} tokens; the text encoder reads at most {limit}, so it kept "
            f"the first {limit} (the full prompt is in the file's metadata)").strip()


def seconds(value: float) -> str:
    return f"{value:.1f} s"


def timing_text(timings: dict, total: float) -> str:
    """`3.5 s total (load 1.2 s, sample 1.6 s, decode 0.5 s, write 0.2 s)`."""
    parts = [f"{name} {seconds(timings[key])}" for key, name in TIMING_NAMES
             if key in timings and (key in ALWAYS_SHOWN or timings[key] >= SHOWN_FROM)]
    return f"{seconds(total)} total" + (f" ({', '.join(parts)})" if parts else "")


def written_line(label: str, record: dict, total: float) -> str:
    """`wrote PATH  17 frames 48×64, seed 5, 3.5 s total (load 1.2 s, ...)`: one finished output."""
    shape = []
    frames, height, width = record.get("frames"), record.get("height"), record.get("width")
    if frames:
        shape.append(f"{frames} frame{'s' if frames != 1 else ''}")
    if height and width:
        shape.append(f"{height}×{width}")
    segments = record.get("segments")
    what = " ".join(shape) + (f" in {segments} segments" if segments else "")
    details = ", ".join(part for part in (what, f"seed {record['seed']}", timing_text(record["timings"], total))
                        if part)
    return f"{label} wrote {record['path']}  {details}".strip()


def done_line(written: int, skipped: int, elapsed: float) -> str:
    return f"done: {written} written, {skipped} skipped in {seconds(elapsed)}"
