"""What the tool says: the model line, summaries, long prompts, `models`, wrong inputs, completions."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine
from cli_fakes import error_line, invoke
from engine.checkpoints import hub, loading
from engine.request import GenerationRequest, ModelInfo
from infinistar_cli import summary
from media_fakes import pattern_frames, write_video

ROOT = Path(__file__).resolve().parents[1]


def test_model_line_names_device_gpu_memory_dtype_and_modes():
    info = ModelInfo(name="480p", source="/cache/snapshots/abc", built_in=False, device="cuda:0", dtype="bfloat16",
                     offload="model", weights="int8", device_name="NVIDIA H200", free_bytes=130 * 2**30,
                     total_bytes=140 * 2**30)
    assert summary.model_line(info) == ("model 480p (/cache/snapshots/abc) on cuda:0 (NVIDIA H200, 130.0 GiB free of "
                                        "140.0 GiB), bfloat16, offload model, weights int8")


def test_device_memory_reads_the_gpu(monkeypatch):
    assert loading.device_memory(torch.device("cpu")) == (None, None, None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (3 * 2**30, 8 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU {index}")
    assert loading.device_memory(torch.device("cuda")) == ("GPU 0", 3 * 2**30, 8 * 2**30)
    assert loading.device_memory(torch.device("cuda:1"))[0] == "GPU 1"


def test_tiny_pipeline_reports_what_it_loaded_and_how_many_tokens_it_kept():
    pipeline = engine.load_pipeline("tiny", device="cpu")
    info = pipeline.info()
    assert (info.name, info.built_in, info.device, info.dtype, info.text_max_tokens) == ("tiny", True, "cpu", "float32", 64)
    assert Path(info.source) == hub.BUILT_IN["tiny"]
    long_prompt = "a red square moving right " * 800
    result = pipeline.run(GenerationRequest(mode="t2v", prompt=long_prompt, seed=0))
    assert result.metadata["prompt"] == long_prompt and result.metadata["text_max_tokens"] == 64
    sent = result.metadata["prompt_sent"]  # the decorated prompt: what the encoder reads
    assert sent.endswith(long_prompt) and result.metadata["prompt_tokens"] == len(sent.encode()) + 1  # bytes + </s>


def test_summary_counts_the_load_and_names_every_time(fake):
    result = invoke("t2v", "a calm lake", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("wrote infinistar_a-calm-lake_3.mp4  9 frames 16×16, seed 3, ")
    total, parts = re.fullmatch(r".*, seed 3, (\S+) s total \((.*)\)", line).groups()
    times = dict(re.fullmatch(r"(\w+) (\S+) s", part).groups() for part in parts.split(", "))
    assert set(times) == {"load", "sample", "write"}
    assert float(total) >= float(times["load"]) and sum(map(float, times.values())) <= float(total) + 0.15


def test_long_prompt_is_shortened_in_the_echo_and_truncation_is_said(fake):
    prompt = "x" * 20_000
    result = invoke("t2v", prompt, "--seed", "1", "-o", "long.mp4")
    assert result.exit_code == 0, result.stderr
    echo = next(line for line in result.stderr.splitlines() if line.startswith("seed 1: "))
    assert echo == f"seed 1: {'x' * 100}… (20,000 characters)"
    assert ("note: the prompt is 20,001 tokens; the text encoder reads at most 64, so it kept the first 64 "
            "(the full prompt is in the file's metadata)") in result.stderr.splitlines()
    assert json.loads(Path("long.mp4.json").read_text())["prompt"] == prompt
    short = invoke("t2v", "a calm lake", "--seed", "1")
    assert "note:" not in short.stderr


def test_long_story_segment_prompt_is_said_to_be_truncated(fake):
    result = invoke("t2v", "a calm lake", "--seed", "1", "--then", "y" * 300)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert f"segment 2/2: {'y' * 100}… (300 characters)" in lines
    assert [line for line in lines if "note:" in line] == [
        "[segment 2/2] note: the prompt is 301 tokens; the text encoder reads at most 64, so it kept the first 64 "
        "(the full prompt is in the file's metadata)"]
    assert lines[-1].startswith("wrote infinistar_a-calm-lake_1.mp4  18 frames 16×16 in 2 segments, seed 1, ")


def test_models_lists_tiny_and_what_runs_offline(clean_env):
    result = invoke("models", "--cache-dir", str(clean_env / "cache"))
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:6]}
    assert list(rows) == ["tiny", "720p", "480p", "interact"]
    assert rows["tiny"][1] == "built-in" and rows["tiny"][4] == "yes" and rows["tiny"][5] == str(hub.BUILT_IN["tiny"])
    assert all(rows[name][1:] == ["absent", "-", "no", "-"] for name in ("720p", "480p", "interact"))
    assert "offline yes: runs without a network connection" in result.stdout


def test_models_rm_of_an_absent_model_says_so_before_asking(clean_env):
    result = invoke("models", "rm", "480p", "--cache-dir", str(clean_env / "cache"), input="y\n")
    assert result.exit_code == 1 and "Delete" not in result.stdout
    assert error_line(result) == f"Error: InfinityStar 480p is not in {clean_env / 'cache'}; nothing to remove."


def test_i2v_given_a_video_points_to_extend(fake):
    write_video(Path("clip.mp4"), pattern_frames(9))
    result = invoke("i2v", "clip.mp4", "--seed", "1")
    assert result.exit_code == 1 and error_line(result) == (
        "Error: clip.mp4 is a video; i2v needs an image (use extend to continue a video).")
    Path("junk.png").write_bytes(b"not an image at all")
    assert "cannot read image" in error_line(invoke("i2v", "junk.png"))


def complete(words: str) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"_INFINISTAR_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = invoke(env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout.split()


def test_completion_of_model_names_folders_and_choices(clean_env):
    assert complete("infinistar t2v --model ") == ["dir,", "plain,720p", "plain,480p", "plain,interact", "plain,tiny"]
    assert complete("infinistar i2v --model t") == ["dir,t", "plain,tiny"]
    assert complete("infinistar t2v --res ") == ["plain,720p", "plain,480p"]
    assert complete("infinistar extend --offload b") == ["plain,blocks"]
    assert complete("infinistar t2i --weights ") == ["plain,bf16", "plain,int8", "plain,fp8"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_model_names_then_folders(clean_env, tmp_path):
    """The committed bash script, run as bash runs it: names first; folders when no name matches."""
    (clean_env / "my-model").mkdir()
    shim = tmp_path / "bin" / "infinistar"
    shim.parent.mkdir()
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m infinistar_cli \"$@\"\n")
    shim.chmod(0o755)
    script = (f"source {ROOT / 'completions' / 'infinistar.bash'}; COMP_WORDS=(infinistar t2v --model t); "
              "COMP_CWORD=3; _infinistar_completion infinistar 2>/dev/null; echo \"${COMPREPLY[@]}\"")
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=clean_env)
    assert out.stdout.split() == ["tiny"], out.stderr
