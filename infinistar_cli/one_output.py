"""Generate and write one planned output: the CLI's commands, its torchrun ranks and the server's
jobs all make their files here, so one seed gives the same file, sidecar and metadata everywhere."""
from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timezone
from typing import Any

import engine
from engine import Event, GenerationRequest, __version__, video_io
from infinistar_cli import summary
from infinistar_cli.options import WriteOptions
from infinistar_cli.output_plan import Planned
from infinistar_cli.progress import Reporter
from infinistar_cli.story import write_story


def output_metadata(request: GenerationRequest, model: str) -> dict:
    """What the CLI knows about an output; the engine's own metadata is laid over it."""
    fields = dataclasses.asdict(request)
    settings = {k: v for k, v in fields.items()
                if v is not None and k not in ("image", "video") and not (k in ("from_start", "only_new") and not v)}
    return {
        **settings,
        "model": str(model),
        "infinistar_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def emit_record(json_output: bool, record: dict, reporter: Reporter) -> None:
    """An output's result on stdout: its JSON record with --json, else the path of a written file."""
    if json_output:
        reporter.result(json.dumps(record, ensure_ascii=False, default=str))
    elif record["status"] == "written":
        reporter.result(record["path"])


def report_skipped(plan: list[Planned], json_output: bool, reporter: Reporter, **extra: Any) -> None:
    """Say which outputs of a batch exist already and are left alone."""
    for item in plan:
        if item.skip:
            reporter.message(f"skipping {item.path}: it already exists (--overwrite regenerates it)")
            emit_record(json_output, {"status": "skipped", "path": str(item.path), "seed": item.request.seed,
                                      "prompt": item.request.prompt, "index": item.index, **extra}, reporter)


def generate_one(pipeline: Any, item: Planned, model: str, writing: WriteOptions, reporter: Any) -> dict:
    """Generate and write one planned output (story segments and extend steps included); the server
    runs its jobs through here too. `reporter` needs on_event, message, begin_output(prefix, header) and prefix."""
    start = time.perf_counter()
    # extend's --seconds and every --then/--story prompt: one run per segment (engine.plan_segments)
    requests = engine.plan_segments(pipeline.preset, item.request, item.segments)
    item = dataclasses.replace(item, request=requests[0])
    if len(requests) > 1:
        return write_story(pipeline, item, requests, output_metadata(item.request, model), writing, reporter,
                           start) | {"model": str(model)}
    result = pipeline.run(item.request, on_event=reporter.on_event)
    metadata = {**output_metadata(item.request, model), **(result.metadata or {})}
    fps = writing.fps or result.fps
    if writing.fps:
        metadata["fps"] = fps
    result = dataclasses.replace(result, fps=fps, metadata=metadata)
    note = summary.truncation_note(reporter.prefix, metadata)
    if note:
        reporter.message(note)
    reporter.on_event(Event(stage="write", message=str(item.path)))
    written = time.perf_counter()
    video_io.write_result(result, item.path, overwrite=writing.overwrite, crf=writing.crf, lossless=writing.lossless)
    end = time.perf_counter()
    timings = {k: v for k, v in (result.timings or {}).items()}
    timings.update(write=round(end - written, 3), total=round(end - start, 3))
    return {"status": "written", "path": str(item.path), "seed": item.request.seed,
            "prompt": item.request.prompt, "index": item.index, "model": str(model), "timings": timings,
            **{key: metadata[name] for key, name in (("frames", "output_frames"), ("height", "height"),
                                                     ("width", "width")) if name in metadata}}
