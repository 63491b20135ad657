"""Same seed, same pixels: the real CLI and tiny model, in every mode, while the cores are busy.

Each mode runs in two processes (default threads, then OMP_NUM_THREADS=1), each writing the same
request twice (a prompt file with one line repeated), so a first write after the model ran, a
later write, and a different thread count are all compared, byte for byte, after decoding.
benchmarks/reproducibility.py does the same with 10 runs per mode.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from media_fakes import pattern_frames, write_image
from engine.media.video_io import read_video, write_mp4

PROMPT = "a red square moving right"


def entry_point() -> list[str]:
    """The installed console script; `python -m` when run from a checkout."""
    script = shutil.which("infinistar")
    return [script] if script else [sys.executable, "-m", "infinistar_cli"]


@pytest.fixture(scope="module")
def busy_cores():
    """Busy-loop processes on every core for the duration of the module's tests."""
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    yield
    for process in load:
        process.kill()
        process.wait()


def decoded(path) -> bytes:
    if path.suffix == ".png":
        return np.asarray(Image.open(path).convert("RGB")).tobytes()
    return read_video(path)[0].numpy().tobytes()


@pytest.mark.slow  # 8 CLI processes on busy cores; CI runs it, `-m "not slow"` skips it while iterating
@pytest.mark.parametrize("mode", ["t2v", "t2i", "i2v", "extend"])
def test_same_seed_same_decoded_frames_under_load_with_any_thread_count(tmp_path, busy_cores, mode):
    inputs = {"t2v": [], "t2i": [], "i2v": [str(write_image(tmp_path / "in.png", 96, 72))],
              "extend": [str(write_mp4(pattern_frames(20), tmp_path / "in.mp4", 16, lossless=True))]}[mode]
    (tmp_path / "prompts.txt").write_text(f"{PROMPT}\n{PROMPT}\n")
    suffix = "png" if mode == "t2i" else "mp4"
    outputs = []
    for threads in ("default", "1"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        if threads == "1":
            env["OMP_NUM_THREADS"] = "1"
        template = tmp_path / f"{threads}_{{index}}.{suffix}"
        done = subprocess.run(entry_point() + ["--quiet", "--device", "cpu", mode, *inputs, "--model", "tiny",
                                               "--prompt-file", "prompts.txt", "--seed", "5", "-o", str(template)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stderr
        outputs += [tmp_path / f"{threads}_{index}.{suffix}" for index in (1, 2)]
    digests = [hashlib.sha256(decoded(path)).hexdigest() for path in outputs]
    assert len(set(digests)) == 1, dict(zip([p.name for p in outputs], digests))
