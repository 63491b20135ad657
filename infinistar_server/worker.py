"""The background worker that owns the device: one job at a time, the model kept loaded for a while.

Jobs run through the CLI's own generation path (infinistar_cli.one_output.generate_one) with the
pipeline from `engine.load_pipeline`, so a job writes the same file, sidecar and metadata as the
CLI does with the same seed. The model loads on the first job (or at start with preload) and is
released after `keep_alive` seconds without work (None: never; 0: after every job).
"""
from __future__ import annotations

import collections
import ctypes
import gc
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import engine
from engine import DEFAULT_CRF, GenerationRequest, InfinistarError, video_io
from infinistar_cli.one_output import generate_one
from infinistar_cli.options import WriteOptions
from infinistar_cli.output_plan import Planned
from infinistar_server.progress import JobCancelled, JobProgress
from infinistar_server.store import JobStore

log = logging.getLogger("infinistar.server")
REQUEST_FIELDS = ("mode", "prompt", "seed", "negative_prompt", "seconds", "cfg", "tau_image", "tau_video",
                  "prompt_decoration", "aspect", "from_start", "only_new")
SHUTDOWN = "shutdown"


class QueueFull(Exception):
    """The bounded queue has no room (HTTP 429)."""


@dataclass(frozen=True)
class Device:
    """How the worker loads models (the CLI's --device, --cache-dir, --offload, --weights)."""

    device: str = "auto"
    cache_dir: Optional[str] = None
    offload: str = "none"
    weights: str = "bf16"


def _trim_heap() -> None:
    """Hand freed memory back to the OS (glibc keeps it otherwise) and the GPU's cached blocks back
    to the driver (PyTorch's allocator keeps them otherwise), so an idle server is small."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    torch = sys.modules.get("torch")  # only if the engine imported it; no tensor is touched here
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class Worker:
    def __init__(self, store: JobStore, outputs: Path, uploads: Path, device: Device,
                 keep_alive: Optional[float], max_queue: int) -> None:
        self.store, self.outputs, self.uploads, self.device = store, outputs, uploads, device
        self.keep_alive, self.max_queue = keep_alive, max_queue
        self.queue: collections.deque[str] = collections.deque()
        self.cond = threading.Condition()
        self.running: Optional[str] = None
        self.progress: Optional[JobProgress] = None
        self.stop_reason: Optional[str] = None  # "cancel" or SHUTDOWN for the running job
        self.pipeline = None
        self.model: Optional[str] = None
        self.idle_since = time.monotonic()
        self.stopping = False
        self.preload: Optional[str] = None
        self.thread = threading.Thread(target=self._loop, name="infinistar-worker", daemon=True)

    # ------------------------------------------------------------------ used by the API (event loop thread)
    def start(self, queued: list[str], preload: Optional[str] = None) -> None:
        self.queue.extend(queued)
        self.preload = preload
        self.thread.start()

    def stop(self) -> None:
        """Stop after the current step; a job cut off by the shutdown goes back to the queue."""
        with self.cond:
            self.stopping = True
            if self.running:
                self.stop_reason = SHUTDOWN
            self.cond.notify_all()
        self.thread.join(timeout=60)

    def submit(self, job_id: str, kind: str, params: dict, upload: Optional[str] = None) -> dict:
        with self.cond:
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({len(self.queue)} jobs waiting); try again later")
            job = self.store.add(job_id, kind, params, upload)
            self.queue.append(job_id)
            self.cond.notify_all()
        return job

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when it is neither."""
        with self.cond:
            if job_id in self.queue:
                self.queue.remove(job_id)
                self.store.finish(job_id, "cancelled", stage=None)
                return True
            if self.running == job_id:
                self.stop_reason = "cancel"
                return True
        return False

    def live(self, job_id: str) -> Optional[dict]:
        """Progress, stage and ETA of the running job; queue position of a queued one."""
        with self.cond:
            if job_id == self.running and self.progress is not None:
                return self.progress.snapshot()
            if job_id in self.queue:
                return {"queue_position": self.queue.index(job_id) + 1}
        return None

    def status(self) -> dict:
        with self.cond:
            return {"model_loaded": self.model if self.pipeline is not None else None,
                    "running": self.running, "queued": len(self.queue), "max_queue": self.max_queue}

    # ------------------------------------------------------------------ the worker thread
    def _loop(self) -> None:
        if self.preload:
            try:
                self._ensure(self.preload, None)
            except Exception as error:  # a broken preload is reported; jobs report their own loads
                log.error("preloading %s failed: %s", self.preload, error)
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    if self._expired():
                        self._release()
                    self.cond.wait(timeout=self._wait_time())
                if self.stopping:
                    break
                job_id = self.queue.popleft()
                self.running, self.stop_reason = job_id, None
            try:
                self._run(job_id)
            finally:
                with self.cond:
                    self.running, self.progress = None, None
                    self.idle_since = time.monotonic()
        self._release()

    def _wait_time(self) -> Optional[float]:
        if self.pipeline is None or self.keep_alive is None:
            return None
        return max(0.05, self.keep_alive - (time.monotonic() - self.idle_since))

    def _expired(self) -> bool:
        return (self.pipeline is not None and self.keep_alive is not None
                and time.monotonic() - self.idle_since >= self.keep_alive)

    def _release(self) -> None:
        if self.pipeline is None:
            return
        log.info("releasing model %s", self.model)
        self.pipeline, self.model = None, None
        gc.collect()
        _trim_heap()

    def _ensure(self, model: str, progress: Optional[JobProgress]):
        if self.pipeline is not None and self.model == model:
            return self.pipeline
        self._release()
        on_event = progress.on_event if progress else None
        d = self.device
        self.pipeline = engine.load_pipeline(model, device=d.device, on_event=on_event, cache_dir=d.cache_dir,
                                             offload=d.offload, weights=d.weights)
        self.model = model
        return self.pipeline

    def _on_stage(self, job_id: str):
        return lambda stage, percent: self.store.update(job_id, stage=stage, progress=percent)

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        params = job["params"]
        suffix = video_io.IMAGE_SUFFIX if params["mode"] == "t2i" else video_io.VIDEO_SUFFIX
        path = self.outputs / f"{job_id}{suffix}"
        progress = JobProgress(lambda: self.stop_reason is not None, self._on_stage(job_id))
        with self.cond:
            self.progress = progress
        self.store.update(job_id, status="in_progress", started_at=int(time.time()), progress=0)
        try:
            pipeline = self._ensure(params["model"], progress)
            fields = {k: params.get(k) for k in REQUEST_FIELDS if params.get(k) is not None}
            if job["upload"]:
                fields["image" if params["mode"] == "i2v" else "video"] = self.uploads / job["upload"]
            item = Planned(GenerationRequest(**fields), path, index=1, skip=False,
                           segments=tuple(params.get("segments") or ()))
            writing = WriteOptions(fps=params.get("fps"), crf=params.get("crf", DEFAULT_CRF), overwrite=False)
            record = generate_one(pipeline, item, params["model"], writing, progress)
        except JobCancelled:
            if self.stop_reason == SHUTDOWN:
                self.store.update(job_id, status="queued", progress=0, stage=None, started_at=None)
            else:
                self.store.finish(job_id, "cancelled", stage=None)
            return
        except InfinistarError as error:
            self.store.finish(job_id, "failed", stage=None, error={"code": "generation_failed", "message": str(error)})
            return
        except Exception as error:  # a bug: the job fails, the server goes on
            log.exception("job %s failed", job_id)
            message = f"unexpected {type(error).__name__}: {error}"
            self.store.finish(job_id, "failed", stage=None, error={"code": "internal_error", "message": message})
            return
        metadata = video_io.read_metadata(path)
        metadata["timings"] = record.get("timings", metadata.get("timings"))
        self.store.finish(job_id, "completed", progress=100, stage=None, output=path.name, metadata=metadata)
