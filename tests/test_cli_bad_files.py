"""Broken weights, inputs that are not what their name says, and output places that cannot be
written: one `Error:` line naming the file, before the model loads where possible (issue 13, §3)."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_fakes import error_line, invoke
from engine.checkpoints.loading import TINY_DIR, TINY_TEXT_WEIGHTS, VAE_SAFETENSORS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """The shipped tiny model as a model folder of its own."""
    folder = tmp_path / "model"
    shutil.copytree(TINY_DIR, folder)
    (folder / "infinistar.json").write_text(json.dumps({"name": "tiny"}))
    return folder


def _cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("relative, size, message", [
    (VAE_SAFETENSORS, 100, f"{VAE_SAFETENSORS} is truncated or not a safetensors file (100 bytes)."),
    (VAE_SAFETENSORS, 4, f"{VAE_SAFETENSORS} is truncated or not a safetensors file (4 bytes)."),
    (VAE_SAFETENSORS, 500_000, f"{VAE_SAFETENSORS} is truncated: its header describes"),
    (str(TINY_TEXT_WEIGHTS), 100, "tiny.safetensors is truncated or not a safetensors file (100 bytes)."),
])
def test_cut_safetensors_is_one_line_naming_the_file(clean_env, model_dir, relative, size, message):
    _cut(model_dir / relative, size)
    result = invoke("t2v", "a cat", "--model", str(model_dir), "--seed", "1")
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith(f"Error: {message}") and "unexpected" not in line and "SafetensorError" not in line
    assert _files(clean_env) == []


def test_pickled_pth_is_refused_without_warnings(clean_env, model_dir):
    (model_dir / VAE_SAFETENSORS).unlink()
    with open(model_dir / "infinitystar_videovae.pth", "wb") as handle:  # pickle protocol 4, not torch.save
        pickle.dump({"vae": {"weight": 1}}, handle, protocol=4)
    out = subprocess.run([sys.executable, "-m", "infinistar_cli", "--device", "cpu", "t2v", "a cat",
                          "--model", str(model_dir), "--seed", "1"],
                         capture_output=True, text=True, timeout=300, cwd=clean_env,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [out.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("Error: Refusing to load infinitystar_videovae.pth: it contains pickled objects")
    assert "Warning" not in out.stderr and "Traceback" not in out.stderr
    assert _files(clean_env) == []


@pytest.mark.parametrize("name", ["notes.png", "notes.jpg", "notes.mp4"])
def test_info_on_a_text_file_fails(clean_env, name):
    Path(name).write_text("hello, this is not a picture\n")
    result = invoke("info", name)
    assert result.exit_code == 1
    line = error_line(result)
    assert name in line and ("cannot read image" in line or "cannot read" in line)
    assert result.stdout == ""


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("output", ["/proc/o.mp4", "/proc/self/o.mp4"])
def test_unwritable_output_place_is_refused_before_loading(fake, output):
    result = invoke("t2v", "a cat", "--model", "tiny", "-o", output)
    assert result.exit_code == 1
    assert error_line(result).startswith("Error: output directory /proc")
    assert "is not writable" in result.stderr
    assert fake.loads == []


def test_writable_output_place_is_left_clean(fake, clean_env):
    result = invoke("t2v", "a cat", "--model", "tiny", "-o", "out/a.mp4", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert _files(clean_env / "out") == ["a.mp4", "a.mp4.json"]  # the writability probe left nothing


@pytest.mark.parametrize("name, fmt", [("cut.png", "PNG"), ("cut.jpg", "JPEG")])
def test_truncated_image_is_refused_before_loading(fake, clean_env, name, fmt):
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(120, 160, 3) * 255).astype(np.uint8)).save(name, format=fmt)
    _cut(Path(name), Path(name).stat().st_size // 2)
    result = invoke("i2v", name, "waves", "--model", "tiny", "--seed", "1")
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: cannot decode image {name}: image file is truncated")
    assert fake.loads == []
    assert _files(clean_env) == [name]
