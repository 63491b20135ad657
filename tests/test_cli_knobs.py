"""`--lossless`, `--guidance` and `--encode-seed` through the CLI (real tiny model, and the fake engine)."""
from __future__ import annotations

import json

import pytest
import torch

import engine
from cli_fakes import invoke
from engine.request import GenerationRequest
from engine.media.video_io import read_metadata, read_video
from media_fakes import write_image

PROMPT = "a red square moving right"

# Tiny models run ~20x faster on one thread than on two contended cores (the pipeline load too).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def real(monkeypatch, clean_env, tiny):
    monkeypatch.setattr(engine, "load_pipeline", lambda model, device="auto", on_event=None, **options: tiny)
    return tiny


def test_lossless_video_decodes_to_exactly_the_generated_frames(real, clean_env):
    result = invoke("t2v", PROMPT, "-m", "tiny", "--seed", "3", "--lossless", "-o", "exact.mp4")
    assert result.exit_code == 0, result.stderr
    expected = real.run(GenerationRequest(mode="t2v", prompt=PROMPT, seed=3)).frames
    assert torch.equal(read_video(clean_env / "exact.mp4")[0], expected)
    sidecar = json.loads((clean_env / "exact.mp4.json").read_text())
    assert sidecar["encoding"]["lossless"] is True and sidecar["encoding"]["codec"] == "libx264rgb"
    assert read_metadata(clean_env / "exact.mp4")["encoding"] == sidecar["encoding"]
    info = invoke("info", "exact.mp4", "--json")
    assert info.exit_code == 0, info.stderr
    assert '"lossless": true' in info.stdout and '"frames": 17' in info.stdout


def test_guidance_option_picks_the_rule(real, clean_env):
    frames = {}
    for rule in ("apg", "cfg"):
        result = invoke("t2v", PROMPT, "-m", "tiny", "--seed", "2", "--guidance", rule, "--lossless", "-o", f"{rule}.mp4")
        assert result.exit_code == 0, result.stderr
        meta = read_metadata(clean_env / f"{rule}.mp4")
        assert meta["guidance"] == rule
        frames[rule] = read_video(clean_env / f"{rule}.mp4")[0]
    preset_rule = real.preset.sampling.guidance  # cfg for tiny: the flag gives the same video as the default
    default = real.run(GenerationRequest(mode="t2v", prompt=PROMPT, seed=2)).frames
    assert torch.equal(frames[preset_rule], default)
    assert not torch.equal(frames["apg"], frames["cfg"])


def test_encode_seed_defaults_to_the_seed_and_changes_the_posterior_draw(real, clean_env):
    write_image(clean_env / "in.png", 96, 72)
    runs = {"default": [], "same": ["--encode-seed", "4"], "other": ["--encode-seed", "9"]}
    frames = {}
    for name, extra in runs.items():
        result = invoke("i2v", "in.png", PROMPT, "-m", "tiny", "--seed", "4", *extra, "--lossless", "-o", f"{name}.mp4")
        assert result.exit_code == 0, result.stderr
        frames[name] = read_video(clean_env / f"{name}.mp4")[0]
        assert read_metadata(clean_env / f"{name}.mp4")["encode_seed"] == (9 if name == "other" else 4)
        assert read_metadata(clean_env / f"{name}.mp4")["seed"] == 4
    assert torch.equal(frames["default"], frames["same"])
    assert not torch.equal(frames["default"], frames["other"])


def test_knobs_reach_the_request_from_flags_and_environment(fake, clean_env):
    write_image(clean_env / "in.png")
    assert invoke("i2v", "in.png", "x", "--seed", "1", "--guidance", "cfg", "--encode-seed", "7").exit_code == 0
    assert invoke("t2v", "x", "--seed", "1", "-o", "b.mp4", env={"INFINISTAR_GUIDANCE": "apg"}).exit_code == 0
    assert invoke("t2i", "x", "--seed", "1", "-o", "c.png").exit_code == 0
    first, second, third = fake.requests
    assert (first.guidance, first.encode_seed, first.posterior_seed) == ("cfg", 7, 7)
    assert (second.guidance, second.encode_seed, second.posterior_seed) == ("apg", None, 1)
    assert (third.guidance, third.encode_seed) == (None, None)


@pytest.mark.parametrize("args, names", [
    (["t2v", "x", "--guidance", "pag"], "--guidance"),
    (["t2v", "x", "--encode-seed", "3"], "--encode-seed"),  # nothing is encoded in t2v
    (["t2i", "x", "--lossless"], "--lossless"),  # PNG is exact already
    (["i2v", "in.png", "x", "--encode-seed", "-1"], "--encode-seed"),
])
def test_bad_knobs_are_usage_errors(fake, clean_env, args, names):
    write_image(clean_env / "in.png")
    result = invoke(*args)
    assert result.exit_code == 2
    assert names in result.stderr and "Traceback" not in result.stderr
    assert fake.loads == []
