"""A video (or image) and its sidecar appear together or not at all (engine.media.atomic): a failure or
Ctrl-C between writing them leaves neither, and an existing pair stays whole (issue 13, §3)."""
from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from cli_fakes import error_line, invoke
from engine.media import atomic, video_io
from engine.errors import OutputExistsError


def _frames(level: int, count: int = 5) -> np.ndarray:
    return np.full((count, 16, 16, 3), level, dtype=np.uint8)


def _fail_sidecar(monkeypatch, error: BaseException) -> None:
    """Make writing the sidecar's temp file fail as a full disk (or a Ctrl-C) would."""
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(".") and ".json." in self.name:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


@pytest.mark.parametrize("args, name", [(["t2v", "a cat"], "o.mp4"), (["t2i", "a cat"], "o.png")])
def test_disk_full_at_the_sidecar_leaves_neither(fake, clean_env, monkeypatch, args, name):
    _fail_sidecar(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    result = invoke(*args, "--model", "tiny", "--seed", "1", "-o", name)
    assert result.exit_code == 1
    assert error_line(result) == "Error: No space left on device"
    assert sorted(os.listdir(clean_env)) == []


def test_ctrl_c_at_the_sidecar_leaves_neither(fake, clean_env, monkeypatch):
    _fail_sidecar(monkeypatch, KeyboardInterrupt())
    result = invoke("t2v", "a cat", "--model", "tiny", "--seed", "1", "-o", "o.mp4")
    assert result.exit_code == 130
    assert error_line(result) == "Error: interrupted"
    assert sorted(os.listdir(clean_env)) == []


def test_failed_overwrite_keeps_the_old_pair(fake, clean_env, monkeypatch):
    assert invoke("t2v", "a cat", "--model", "tiny", "--seed", "1", "-o", "o.mp4").exit_code == 0
    before = {name: (clean_env / name).read_bytes() for name in ("o.mp4", "o.mp4.json")}
    _fail_sidecar(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    result = invoke("t2v", "a cat", "--model", "tiny", "--seed", "2", "-o", "o.mp4", "--overwrite")
    assert result.exit_code == 1
    assert {name: (clean_env / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(clean_env)) == ["o.mp4", "o.mp4.json"]


def test_no_clobber_is_checked_when_publishing(tmp_path):
    path = tmp_path / "o.mp4"
    video_io.write_mp4(_frames(10), path, 8, metadata={"run": 1})
    writer = video_io.VideoWriter(tmp_path / "p.mp4", 8, metadata={"run": 2})
    writer.write(_frames(20))
    writer.path = writer._staged.path = path  # another run took the name meanwhile
    with pytest.raises(OutputExistsError):
        writer.close()
    assert json.loads(video_io.sidecar_path(path).read_text())["run"] == 1  # the first run's pair stays
    assert sorted(os.listdir(tmp_path)) == ["o.mp4", "o.mp4.json"]


def test_signal_while_publishing_is_delivered_after_both_names(tmp_path, monkeypatch):
    """A SIGINT that arrives between the two renames waits until both are in place."""
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(Path(dst).name)
        real_replace(src, dst)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # between the sidecar and the video

    monkeypatch.setattr(os, "replace", replace)
    # Python's own Ctrl-C handler, also where the suite was started with SIGINT ignored (a
    # background job of a non-interactive shell), which the deferral rightly leaves alone.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            video_io.write_mp4(_frames(30), tmp_path / "o.mp4", 8, metadata={"run": 3}, overwrite=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == ["o.mp4.json", "o.mp4"]
    assert sorted(os.listdir(tmp_path)) == ["o.mp4", "o.mp4.json"]


def test_temps_left_by_an_interruption_are_removed_at_exit(tmp_path):
    staged = atomic.Staged(tmp_path / "o.mp4")
    assert staged.tmp.exists() and staged.tmp.name.startswith(".o.mp4.")
    atomic.discard_all()
    assert sorted(os.listdir(tmp_path)) == []
