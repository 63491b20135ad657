"""End to end with the real tiny model shipped in the package: CLI -> pipeline -> MP4/PNG on disk."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from engine import presets
from engine.checkpoints.loading import TINY_DIR, TINY_TEXT_WEIGHTS, VAE_SAFETENSORS
from engine.media.video_io import read_metadata
from engine.checkpoints.weights import write_safetensors_dir
from cli_fakes import error_line, invoke

TINY = presets.get("tiny")
HEIGHT, WIDTH = 48, 64


def entry_point() -> list[str]:
    """The installed console script (CI installs the package); `python -m` when run from a checkout."""
    script = shutil.which("infinistar")
    return [script] if script else [sys.executable, "-m", "infinistar_cli"]


def decode(path: Path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate)


def test_t2v_through_the_installed_entry_point(clean_env):
    out = subprocess.run(
        entry_point() + ["--device", "cpu", "t2v", "a red ball", "--model", "tiny", "-o", "x.mp4", "--seed", "7"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    frames, fps = decode(clean_env / "x.mp4")
    assert frames.shape == (TINY.frames[0], HEIGHT, WIDTH, 3)
    assert fps == TINY.fps
    with av.open(str(clean_env / "x.mp4")) as container:
        tags = json.loads(next(v for v in container.metadata.values() if '"seed"' in v))
    assert tags["seed"] == 7 and tags["prompt"] == "a red ball"
    assert tags["prompt_sent"] == "<<<t=1s>>>a red ball"
    assert json.loads((clean_env / "x.mp4.json").read_text())["seed"] == 7


def test_errors_through_the_entry_point_are_one_line(clean_env):
    out = subprocess.run(entry_point() + ["t2v", "x", "--res", "720p", "--seconds", "10"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "480p" in out.stderr


def test_t2i_writes_a_png_with_metadata(clean_env):
    result = invoke("--device", "cpu", "t2i", "a blue cube", "--model", "tiny", "-o", "cube.png", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    image = Image.open(clean_env / "cube.png")
    assert image.size == (WIDTH, HEIGHT) and image.mode == "RGB"
    meta = read_metadata(clean_env / "cube.png")
    assert meta["seed"] == 3 and meta["frames"] == 1
    assert meta["prompt_sent"] == "a blue cube"  # images carry no duration tag


def test_same_seed_same_frames_other_seed_other_frames(clean_env):
    for name, seed in (("a.mp4", 5), ("b.mp4", 5), ("c.mp4", 6)):
        result = invoke("--device", "cpu", "t2v", "a red ball", "--model", "tiny", "-o", name, "--seed", str(seed))
        assert result.exit_code == 0, result.stderr
    a, b, c = (decode(clean_env / n)[0].astype(int) for n in ("a.mp4", "b.mp4", "c.mp4"))
    assert np.array_equal(a, b)  # the MP4 writer is a function of the frames (engine.media.encoding)
    assert np.abs(a - c).mean() > 2.0


def test_prompt_file_batch_loads_once_and_json_lines_parse(clean_env):
    (clean_env / "prompts.txt").write_text("# three prompts\na red ball\n\na green box\na white cat\n")
    args = ["--device", "cpu", "t2v", "--model", "tiny", "--prompt-file", "prompts.txt", "--seed", "1",
            "-o", "{index}_{slug}.mp4", "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [r["prompt"] for r in records] == ["a red ball", "a green box", "a white cat"]
    for record in records:
        assert Path(record["path"]).is_file() and record["seed"] == 1
    assert [line.startswith("model tiny (") for line in result.stderr.splitlines()].count(True) == 1  # one load
    rerun = invoke(*args)  # finished outputs are skipped on a rerun
    assert rerun.exit_code == 0
    skipped = [json.loads(line) for line in rerun.stdout.splitlines() if line.strip()]
    assert [r["status"] for r in skipped] == ["skipped"] * 3


def test_negative_prompt_changes_the_video(clean_env):
    base = ["--device", "cpu", "t2v", "a red ball", "--model", "tiny", "--seed", "2"]
    assert invoke(*base, "-o", "plain.mp4").exit_code == 0
    result = invoke(*base, "-o", "neg.mp4", "--negative-prompt", "blurry, dark and noisy")
    assert result.exit_code == 0, result.stderr
    assert read_metadata(clean_env / "neg.mp4")["negative_prompt"] == "blurry, dark and noisy"
    assert not np.array_equal(decode(clean_env / "plain.mp4")[0], decode(clean_env / "neg.mp4")[0])


def _official_layout_copy(root: Path) -> Path:
    """The tiny model written the way the official release stores models: sharded safetensors with an
    index, the VAE as a torch.save'd {'vae': state_dict} .pth, plus an infinistar.json."""
    folder = root / "my-model"
    write_safetensors_dir(load_file(str(TINY_DIR / TINY.checkpoint_dir / "model.safetensors")),
                          folder / TINY.checkpoint_dir, max_shard_bytes=400_000)
    torch.save({"vae": load_file(str(TINY_DIR / VAE_SAFETENSORS))}, folder / "infinitystar_videovae.pth")
    if (TINY_DIR / TINY_TEXT_WEIGHTS).is_file():  # the trained tiny text encoder travels with it
        (folder / TINY_TEXT_WEIGHTS).parent.mkdir(parents=True)
        shutil.copy(TINY_DIR / TINY_TEXT_WEIGHTS, folder / TINY_TEXT_WEIGHTS)
    (folder / "infinistar.json").write_text(json.dumps({"name": "tiny", "description": "a copy"}))
    return folder


def test_model_folder_in_official_layout_equals_the_builtin_model(clean_env):
    folder = _official_layout_copy(clean_env)
    assert len(list((folder / TINY.checkpoint_dir).glob("model-*-of-*.safetensors"))) > 1
    for model, name in (("tiny", "builtin.mp4"), (str(folder), "folder.mp4")):
        result = invoke("--device", "cpu", "t2v", "a red ball", "--model", model, "-o", name, "--seed", "9")
        assert result.exit_code == 0, result.stderr
    builtin, folder_frames = (decode(clean_env / n)[0].astype(int) for n in ("builtin.mp4", "folder.mp4"))
    assert np.array_equal(builtin, folder_frames)


def test_corrupt_model_folder_is_a_one_line_error(clean_env):
    folder = _official_layout_copy(clean_env)
    shard = sorted((folder / TINY.checkpoint_dir).glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    result = invoke("--device", "cpu", "t2v", "a red ball", "--model", str(folder), "-o", "x.mp4", "--seed", "1")
    assert result.exit_code != 0
    assert shard.name in error_line(result)
    assert not (clean_env / "x.mp4").exists()


def test_same_seed_gives_bit_identical_frames_from_the_pipeline():
    from engine.generate.pipeline import load_pipeline
    from engine.request import GenerationRequest

    pipeline = load_pipeline("tiny", device="cpu")
    request = GenerationRequest(mode="t2v", prompt="a blue square moving up", seed=11)
    first, second = pipeline.run(request).frames, pipeline.run(request).frames
    assert torch.equal(first, second)
    other = pipeline.run(GenerationRequest(mode="t2v", prompt="a blue square moving up", seed=12)).frames
    assert not torch.equal(first, other)
