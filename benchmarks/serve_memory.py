"""Resident memory of `infinistar serve` across keep-alive: fresh, model loaded, released, and again.

Usage (from the repository root): python benchmarks/serve_memory.py [--model tiny] [--keep-alive 3s] [--jobs 3]
Starts a server on a free loopback port, runs jobs, reads /health's rss_bytes, prints a table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_process import ServerProcess  # noqa: E402


def rss(http: httpx.Client) -> tuple[float, str]:
    health = http.get("/health").json()
    return health["rss_bytes"] / 2**20, health["model_loaded"] or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-alive", default="3s")
    parser.add_argument("--jobs", type=int, default=3, help="rounds of (job, keep-alive expiry)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(Path(folder) / "data", "--keep-alive", args.keep_alive).start()
        try:
            http = httpx.Client(base_url=server.url, timeout=300)
            rows = [("fresh (no model)", *rss(http))]
            for round_ in range(1, args.jobs + 1):
                job = http.post("/v1/videos", json={"prompt": "a red square moving right", "seed": round_}).json()
                server.wait_for(http, job["id"])
                rows.append((f"after job {round_} (loaded)", *rss(http)))
                while http.get("/health").json()["model_loaded"] is not None:
                    time.sleep(0.1)
                rows.append((f"after keep-alive {round_} (released)", *rss(http)))
        finally:
            server.stop()
    print(f"{'moment':34} {'RSS MiB':>8}  model")
    for moment, mib, model in rows:
        print(f"{moment:34} {mib:8.1f}  {model}")


if __name__ == "__main__":
    main()
