"""Prompt files, seeds and output names: turning the command line into a list of outputs."""
from __future__ import annotations

import io
import json
import random
import re
import string
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine import InfinistarError, sampling_value_problem

SEED_MAX = 2**32 - 1
SLUG_LENGTH = 40
DEFAULT_STEM = "infinistar_{slug}_{seed}"
PLACEHOLDERS = ("seed", "index", "slug")
# Prompt and story files: T5 reads 512 tokens, so a longer line is not a prompt; the file bound
# still allows hundreds of thousands of prompts.
MAX_LINE_BYTES = 64 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024

# Per-line keys of a .jsonl prompt file -> accepted JSON types; the mode decides which apply.
JSONL_KEYS: dict[str, tuple] = {
    "prompt": (str,),
    "seed": (int, list),
    "output": (str,),
    "negative_prompt": (str,),
    "cfg": (int, float),
    "tau_image": (int, float),
    "tau_video": (int, float),
    "seconds": (int,),
}
VIDEO_ONLY_KEYS = {"tau_video", "seconds"}


class BatchError(InfinistarError):
    """A prompt, seed, prompt file line or output name is unusable."""


@dataclass(frozen=True)
class Job:
    """One prompt with its own settings; it yields one output per seed."""

    prompt: str
    where: str  # "command line" or "<file> line N", for messages
    seeds: Optional[tuple[int, ...]] = None
    output: Optional[str] = None
    overrides: dict = field(default_factory=dict)


def check_prompt(prompt: str, where: str) -> str:
    prompt = prompt.strip()
    if not prompt:
        raise BatchError(f"{where}: the prompt is empty" if where else "the prompt is empty")
    return prompt


def check_seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise BatchError(f"{where}: seed must be an integer from 0 to {SEED_MAX}, got {value!r}")
    return value


def random_seed() -> int:
    return random.SystemRandom().randint(0, SEED_MAX)


def _lines(handle: Any, name: str, what: str) -> list[tuple[int, str]]:
    """(number, text) of every line of a binary handle, refusing endless lines and huge files
    (`/dev/zero`, a video given by mistake) after reading at most MAX_LINE_BYTES past the limit."""
    lines, total = [], 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return lines
        number = len(lines) + 1
        total += len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise BatchError(f"{what} {name} line {number} is longer than {MAX_LINE_BYTES // 1024} KiB; "
                             "is it a text file?")
        if total > MAX_FILE_BYTES:
            raise BatchError(f"{what} {name} is larger than {MAX_FILE_BYTES >> 20} MiB")
        try:
            lines.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError:
            raise BatchError(f"{what} {name} line {number} is not UTF-8 text") from None


def read_prompt_lines(path: str, what: str) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines not starting with `#`; `-` reads stdin.
    A missing, unreadable, empty or oversized file is a BatchError naming `what` ("prompt file", ...)."""
    name = "stdin" if path == "-" else path
    if path == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else io.BytesIO(sys.stdin.read().encode())
        numbered = _lines(stdin, name, what)
    else:
        try:
            with open(path, "rb") as handle:
                numbered = _lines(handle, name, what)
        except FileNotFoundError:
            raise BatchError(f"{what} {path} not found") from None
        except OSError as error:
            raise BatchError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if numbered and numbered[0][1].startswith("\ufeff"):  # a byte-order mark some editors write
        numbered[0] = (1, numbered[0][1][1:])
    lines = [(n, line.strip()) for n, line in numbered]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise BatchError(f"{what} {name} has no prompts")
    return lines


def read_prompt_file(path: str, mode: str) -> list[Job]:
    """Jobs from a text file (one prompt per line) or a .jsonl file (one JSON object per line).

    `-` reads stdin; its format is JSON lines when the first prompt line starts with `{`.
    Blank lines and lines starting with `#` are skipped in both formats.
    """
    name = "stdin" if path == "-" else path
    lines = read_prompt_lines(path, "prompt file")
    jsonl = path.lower().endswith(".jsonl") if path != "-" else lines[0][1].startswith("{")
    if not jsonl:
        return [Job(prompt=line, where=f"{name} line {n}") for n, line in lines]
    return [_jsonl_job(line, f"{name} line {n}", mode) for n, line in lines]


def _jsonl_job(line: str, where: str, mode: str) -> Job:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BatchError(f"{where}: invalid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise BatchError(f"{where}: expected a JSON object like {{\"prompt\": \"...\"}}")
    allowed = {k: v for k, v in JSONL_KEYS.items() if mode == "t2v" or k not in VIDEO_ONLY_KEYS}
    for key, value in record.items():
        if key not in allowed:
            raise BatchError(f"{where}: unknown key '{key}' (known: {', '.join(allowed)})")
        if isinstance(value, bool) or not isinstance(value, allowed[key]):
            raise BatchError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    if "prompt" not in record:
        raise BatchError(f"{where}: missing \"prompt\"")
    seeds = record.get("seed")
    if seeds is not None:
        seeds = tuple(check_seed(s, where) for s in (seeds if isinstance(seeds, list) else [seeds]))
        if not seeds:
            raise BatchError(f"{where}: 'seed' is an empty list")
    overrides = {k: v for k, v in record.items() if k not in ("prompt", "seed", "output")}
    for key in ("cfg", "tau_image", "tau_video"):
        if key in overrides:
            problem = sampling_value_problem(key, overrides[key])
            if problem:
                raise BatchError(f"{where}: {key}: {problem}")
            overrides[key] = float(overrides[key])
    if overrides.get("seconds", 1) < 1:
        raise BatchError(f"{where}: 'seconds' must be >= 1")
    return Job(prompt=check_prompt(record["prompt"], where), where=where, seeds=seeds,
               output=record.get("output"), overrides=overrides)


def slugify(prompt: str) -> str:
    """A short file-name-safe form of the prompt: `A cat, surfing!` -> `a-cat-surfing`."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > SLUG_LENGTH:
            break
        slug = candidate
    return slug or (words[0][:SLUG_LENGTH] if words else "prompt")


def check_template(template: str, where: str) -> None:
    """Reject unknown `{placeholders}` and broken braces before any work starts."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as error:
        raise BatchError(f"{where}: bad output template {template!r} ({error})") from None
    for name in fields:
        base = re.split(r"[.\[!:]", name, maxsplit=1)[0]
        if base not in PLACEHOLDERS:
            raise BatchError(
                f"{where}: unknown placeholder {{{name}}} in output {template!r}; use {{seed}}, {{index}} or {{slug}}"
            )
    try:
        template.format(seed=0, index=1, slug="x")
    except (ValueError, IndexError, KeyError, AttributeError) as error:
        raise BatchError(f"{where}: bad output template {template!r} ({error})") from None


def output_path(template: Optional[str], *, seed: int, index: int, prompt: str, suffix: str, where: str) -> Path:
    """Where one output goes. No template: `infinistar_<slug>_<seed><suffix>` in the current
    directory; a template naming an existing directory (or ending in `/`): that name inside it;
    a template without a suffix gets `suffix`."""
    values = {"seed": seed, "index": index, "slug": slugify(prompt)}
    default_name = DEFAULT_STEM.format(**values) + suffix
    if template is None:
        return Path(default_name)
    check_template(template, where)
    rendered = template.format(**values)
    path = Path(rendered).expanduser()
    if rendered.endswith(("/", "\\")) or path.is_dir():
        return path / default_name
    if not path.suffix:
        path = path.with_name(path.name + suffix)
    return path
