"""Long videos from the command line: --then/--story prompts, segments streamed into one MP4."""
from __future__ import annotations

import time
from typing import Any, Optional

from engine import Event, video_io
from infinistar_cli.batch import read_prompt_lines
from infinistar_cli.options import WriteOptions
from infinistar_cli.progress import Reporter
from infinistar_cli.summary import shorten, truncation_note


def read_story(path: Optional[str]) -> list[str]:
    """Prompts of a story file: one per line; blank lines and `#` comments skipped; - is stdin."""
    if not path:
        return []
    return [line for _, line in read_prompt_lines(path, "story file")]


def write_story(pipeline: Any, item: Any, requests: list[Any], metadata: dict, writing: WriteOptions,
                reporter: Reporter, start: float) -> dict:
    """Generate the segments `requests` (engine.plan_segments) of `item`, writing each one as it is done."""
    label = reporter.prefix

    def on_event(event: Event) -> None:
        if event.stage == "segment":
            reporter.begin_output(f"{label} [segment {event.done}/{event.total}]".strip(),
                                  f"{label} segment {event.done}/{event.total}: "
                                  f"{shorten(event.message) or '(no prompt)'}".strip())
        else:
            reporter.on_event(event)

    writer = None
    segments, timings = [], {}
    try:
        for result in pipeline.run_story(requests, on_event=on_event):
            if writer is None:
                fps = writing.fps or result.fps
                # The file's own tag is written before the later segments exist: it lists what each
                # segment is asked for; the sidecar adds what each one did.
                header = {**metadata, **result.metadata, "fps": fps,
                          "segments": [{"segment": k + 1, "prompt": r.prompt, "seed": r.seed}
                                       for k, r in enumerate(requests)]}
                for key in ("frames", "output_frames", "segment"):
                    header.pop(key, None)
                writer = video_io.VideoWriter(item.path, fps, metadata=header, overwrite=writing.overwrite,
                                              crf=writing.crf, lossless=writing.lossless)
            writer.write(result.frames)
            note = truncation_note(reporter.prefix, result.metadata)
            if note:
                reporter.message(note)
            meta = result.metadata
            segments.append({key: meta.get(key) for key in ("segment", "prompt", "prompt_sent", "seed", "forced_scales",
                                                             "output_frames", "input", "window")
                             if meta.get(key) is not None})
            for key, value in (result.timings or {}).items():
                timings[key] = round(timings.get(key, 0) + value, 3) if key != "load" else value
        writer.metadata.update(segments=segments, output_frames=writer.frames_written)
        reporter.on_event(Event(stage="write", message=str(item.path)))
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    timings["total"] = round(time.perf_counter() - start, 3)
    size = {key: result.metadata[key] for key in ("height", "width") if key in result.metadata}
    return {"status": "written", "path": str(item.path), "seed": item.request.seed, "prompt": item.request.prompt,
            "index": item.index, "segments": len(requests), "frames": writer.frames_written, **size,
            "timings": timings}
