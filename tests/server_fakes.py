"""The server in-process (Starlette's TestClient) with a fake engine behind `engine.load_pipeline`."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch

from engine.request import Event, GenerationRequest, Result

BOUND_S = 30  # a bound on waits, never a timing assertion


def fake_frames(seed: int, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 16, 16, 3), generator=generator, dtype=torch.uint8)


@dataclass
class SteppingEngine:
    """Pipelines whose run() takes `steps` sampling steps; `pause_at` blocks after that step until
    `release` is set, so a test can act while a job is provably mid-sampling."""

    steps: int = 6
    pause_at: Optional[int] = None
    loads: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    steps_run: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def load(self, model, device="auto", on_event=None, **options):
        self.loads.append(str(model))
        if on_event:
            on_event(Event("load", 1, 1))
        return SimpleNamespace(preset=SimpleNamespace(name=str(model), fps=8, frames=(9, 17)), run=self.run)

    def run(self, request: GenerationRequest, on_event=None, reference=None) -> Result:
        self.requests.append(request)
        for step in range(1, self.steps + 1):
            on_event(Event("sample", step, self.steps, clip=0, scale=step - 1))
            self.steps_run += 1
            if step == self.pause_at:
                self.reached.set()
                self.release.wait(BOUND_S)
        on_event(Event("decode", 1, 1))
        count = 1 if request.mode == "t2i" else 9
        return Result(frames=fake_frames(request.seed, count), fps=8, metadata={"preset": "fake"},
                      timings={"sample": 0.01})


def wait_until(check, what: str):
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} did not happen within {BOUND_S} s")


def finished(client, job_id: str) -> dict:
    return wait_until(lambda: (lambda job: job if job["status"] in ("completed", "failed", "cancelled") else None)(
        client.get(f"/v1/videos/{job_id}").json()), f"job {job_id} finishing")


class Servers:
    """Apps over one data dir, started in-process (their workers running) and stopped at the end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.clients: list = []

    def start(self, **settings):
        from fastapi.testclient import TestClient

        from infinistar_server.app import ServerSettings, create_app

        settings.setdefault("model", "tiny")
        client = TestClient(create_app(ServerSettings(data_dir=self.data_dir, **settings)))
        client.__enter__()
        self.clients.append(client)
        return client

    def stop(self, client) -> None:
        self.clients.remove(client)
        client.__exit__(None, None, None)

    def close(self) -> None:
        for client in reversed(self.clients):
            client.__exit__(None, None, None)


def data_files(tmp_path: Path) -> list[str]:
    """Every file the server wrote in its outputs and uploads."""
    return sorted(str(p.relative_to(tmp_path)) for folder in ("outputs", "uploads")
                  for p in (tmp_path / "data" / folder).glob("*"))
