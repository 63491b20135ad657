"""SIGINT/SIGTERM at any point of a run, in real processes (issue 13, §3): exit 130 / 143, one
line, no traceback, no temp file, and a video never without its sidecar."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

FAKE_CLI = Path(__file__).resolve().parent / "fake_cli.py"
ROOT = Path(__file__).resolve().parents[1]
NOISE = ("Traceback", "Exception ignored", "Warning")

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")


def _start(cwd: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FAKE_CLI), "--device", "cpu", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _signal_at(process: subprocess.Popen, marker: str, signum: int, delay: float = 0.0) -> tuple[int, str]:
    """Send `signum` `delay` s after a stderr line containing `marker`; (exit status, stderr)."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            time.sleep(delay)
            process.send_signal(signum)
            break
    rest = process.stderr.read()
    process.stdout.read()
    return process.wait(timeout=120), "".join(seen) + rest


def _clean(stderr: str) -> None:
    for noise in NOISE:
        assert noise not in stderr, stderr


@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated"),
                                                  (signal.SIGINT, 130, "interrupted")])
def test_signal_during_story_segment_two(tmp_path, signum, status, word):
    process = _start(tmp_path, "t2v", "a red square", "--then", "a blue square", "--model", "tiny",
                     "--seed", "1", "-o", "o.mp4", FAKE_STORY_HOLD="2")
    code, stderr = _signal_at(process, "segment 2/2", signum)
    assert code == status
    assert stderr.strip().splitlines()[-1] == f"Error: {word}"
    _clean(stderr)
    assert sorted(os.listdir(tmp_path)) == []  # the streamed first segment's .part is gone


@pytest.mark.slow
def test_sigint_around_the_writer_never_splits_a_pair(tmp_path):
    """Ctrl-C from just before the writer starts to after it has finished: every outcome is either
    nothing (130) or the whole pair (0, or 130 when the signal came after publishing)."""
    for delay in (0.0, 0.005, 0.02, 0.08, 0.3):
        work = tmp_path / f"d{delay}"
        work.mkdir()
        process = _start(work, "t2v", "a red square", "--model", "tiny", "--seed", "1", "-o", "o.mp4")
        code, stderr = _signal_at(process, "writing", signal.SIGINT, delay)
        files = sorted(os.listdir(work))
        assert code in (0, 130), stderr
        assert files in ([], ["o.mp4", "o.mp4.json"]), (delay, files)
        assert code == 130 or files, stderr
        if code == 130:
            assert stderr.strip().splitlines()[-1] == "Error: interrupted"
        _clean(stderr)


WRITER = """
import sys, time
import numpy as np
from engine.media import video_io
writer, rounds, start, step, path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
frames = np.full((9, 16, 16, 3), 40 * writer, dtype=np.uint8)
for number in range(rounds):
    time.sleep(max(0.0, start + number * step - time.time()))
    video_io.write_mp4(frames, path, 8, metadata={"writer": writer, "round": number}, overwrite=True)
"""


def _pair(path: Path) -> tuple[dict, dict]:
    """(the video's own metadata, its sidecar's), read under the directory lock publishers take."""
    import fcntl

    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with av.open(str(path)) as container:
            embedded = json.loads(container.metadata["comment"])
        return embedded, json.loads(Path(str(path) + ".json").read_text())
    finally:
        os.close(fd)


@pytest.mark.slow
def test_racing_writers_never_mix_a_pair(tmp_path):
    """Two processes overwriting one name in lock-step rounds while a reader looks between rounds:
    the video and the sidecar it sees always come from the same write."""
    rounds, step, path = 40, 0.25, tmp_path / "o.mp4"
    start = time.time() + 3.0  # both writers have imported everything by then
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(rounds), str(start), str(step), str(path)],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
               for w in (1, 2)]
    mixed, looks = [], 0
    while any(w.poll() is None for w in writers):
        time.sleep(step / 3)
        if path.exists() and Path(str(path) + ".json").exists():
            embedded, sidecar = _pair(path)
            looks += 1
            if embedded != sidecar:
                mixed.append((embedded, sidecar))
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read()
    assert looks > 10 and mixed == []
    embedded, sidecar = _pair(path)
    assert embedded == sidecar and embedded["round"] == rounds - 1
    assert sorted(os.listdir(tmp_path)) == ["o.mp4", "o.mp4.json"]
