"""A real `infinistar serve` process on a free loopback port, for end-to-end tests of the server."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx

STARTUP_S = 240
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`infinistar --device cpu serve --model tiny` on 127.0.0.1 with its own data dir."""

    def __init__(self, data_dir: Path, *args: str, port: Optional[int] = None) -> None:
        self.data_dir, self.args = Path(data_dir), args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "ServerProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFINISTAR_")}
        # One thread: on busy cores PyTorch's threads stall on each other (README, "Busy or small CPUs").
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        command = [sys.executable, "-m", "infinistar_cli", "--device", "cpu", "serve", "--model", "tiny",
                   "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer within {STARTUP_S} s: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses power."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_for_stage(self, client: httpx.Client, job_id: str, stage: str, timeout: float = 300) -> dict:
        """Poll a running job until it reports `stage` (sample: provably mid-generation)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = client.get(f"/v1/videos/{job_id}").json()
            if job["stage"] == stage:
                return job
            if job["status"] in ("completed", "failed", "cancelled"):
                raise AssertionError(f"job {job_id} ended ({job['status']}) before stage {stage}")
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} not at stage {stage} after {timeout} s")

    def wait_for(self, client: httpx.Client, job_id: str, done=("completed", "failed", "cancelled"),
                 timeout: float = 300) -> dict:
        """Poll a job until its status is in `done` (a bound, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = client.get(f"/v1/videos/{job_id}").json()
            if job["status"] in done:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
