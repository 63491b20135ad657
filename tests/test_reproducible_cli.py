"""Same seed, same pixels: the real CLI and tiny model, in every mode, while the cores are busy.

Each mode runs in two processes (default threads, and OMP_NUM_THREADS=1), each writing the same
request twice (a prompt file with one line repeated), so a first write after the model ran, a
later write, and a different thread count are all compared, byte for byte, after decoding. All
eight processes run at once beside a busy loop on every core: each is load for the others too.
benchmarks/reproducibility.py does the same with 10 runs per mode.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media_fakes import pattern_frames, write_image
from engine.media.video_io import read_video, write_mp4

PROMPT = "a red square moving right"
MODES = ("t2v", "t2i", "i2v", "extend")
THREADS = ("default", "1")


def entry_point() -> list[str]:
    """The installed console script; `python -m` when run from a checkout."""
    script = shutil.which("infinistar")
    return [script] if script else [sys.executable, "-m", "infinistar_cli"]


def decoded(path) -> bytes:
    if path.suffix == ".png":
        return np.asarray(Image.open(path).convert("RGB")).tobytes()
    return read_video(path)[0].numpy().tobytes()


def output(folder: Path, mode: str, threads: str, index: int | str) -> Path:
    return folder / f"{mode}_{threads}_{index}.{'png' if mode == 't2i' else 'mp4'}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """mode -> ([(exit status, stderr)] per thread setting, its four outputs), from eight CLI
    processes started together on cores kept busy until the last has finished."""
    folder = tmp_path_factory.mktemp("reproducible")
    (folder / "prompts.txt").write_text(f"{PROMPT}\n{PROMPT}\n")
    inputs = {"t2v": [], "t2i": [], "i2v": [str(write_image(folder / "in.png", 96, 72))],
              "extend": [str(write_mp4(pattern_frames(20), folder / "in.mp4", 16, lossless=True))]}
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    started = {}
    try:
        for mode in MODES:
            for threads in THREADS:
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
                if threads == "1":
                    env["OMP_NUM_THREADS"] = "1"
                command = entry_point() + ["--quiet", "--device", "cpu", mode, *inputs[mode], "--model", "tiny",
                                           "--prompt-file", "prompts.txt", "--seed", "5",
                                           "-o", str(output(folder, mode, threads, "{index}"))]
                with open(folder / f"{mode}_{threads}.stderr", "w") as stderr:
                    started[mode, threads] = subprocess.Popen(command, cwd=folder, env=env,
                                                              stdout=subprocess.DEVNULL, stderr=stderr)
        for process in started.values():
            process.wait(timeout=1800)
    finally:
        for process in [*load, *started.values()]:
            process.kill()
            process.wait()
    return {mode: ([(started[mode, t].returncode, (folder / f"{mode}_{t}.stderr").read_text()) for t in THREADS],
                   [output(folder, mode, t, i) for t in THREADS for i in (1, 2)])
            for mode in MODES}


@pytest.mark.slow  # 8 CLI processes on busy cores; CI runs it, `-m "not slow"` skips it while iterating
@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_decoded_frames_under_load_with_any_thread_count(runs, mode):
    results, outputs = runs[mode]
    for returncode, stderr in results:
        assert returncode == 0, stderr
    digests = [hashlib.sha256(decoded(path)).hexdigest() for path in outputs]
    assert len(set(digests)) == 1, dict(zip([p.name for p in outputs], digests))
