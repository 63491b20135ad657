"""The shipped tiny model (trained on engine.train.synthetic) draws what the prompt says.

Judged as a viewer would (`engine.train.judge`): the object at full brightness in the first and
in the last frame, its colour, the direction it moves, and its shape (bounding-box fill ratio;
measured for every video, not asserted yet: see T2V_RATE).

Held out: the 12 prompts and the seeds 20, 21, 22 below were not used for tuning. Recipe and
sampling defaults were tuned on other prompts (`TUNING_PROMPTS`) with seeds 5, 6, 7, and the
previous test set (10 other prompts, seeds 0-2) is disjoint from both.
"""
from __future__ import annotations

import pytest
import torch

from PIL import Image

from engine.media import video_io
from engine.train.judge import judge
from engine.train.synthetic import render, sample_scene
from engine.generate.pipeline import load_pipeline
from engine.request import GenerationRequest

pytestmark = pytest.mark.usefixtures("one_thread")

# Every shape 4 times, every direction 3 times, every colour at least twice.
PROMPTS = [
    ("red", "square", "down"), ("red", "circle", "up"), ("green", "square", "up"),
    ("green", "triangle", "down"), ("blue", "circle", "down"), ("blue", "square", "right"),
    ("yellow", "circle", "left"), ("yellow", "square", "right"), ("white", "circle", "right"),
    ("white", "triangle", "up"), ("red", "triangle", "left"), ("blue", "triangle", "left"),
]
SEEDS = (20, 21, 22)
# Used while tuning (seeds 5, 6, 7), never by this test.
TUNING_PROMPTS = [
    ("red", "circle", "left"), ("green", "triangle", "right"), ("blue", "square", "down"),
    ("yellow", "triangle", "up"), ("white", "circle", "down"), ("red", "square", "up"),
    ("green", "circle", "left"), ("blue", "triangle", "right"), ("yellow", "square", "left"),
    ("white", "triangle", "down"), ("red", "triangle", "right"), ("blue", "circle", "up"),
]
SEEN = ("colour", "direction", "first", "last")  # everything but the shape
# What the shipped weights meet on these held-out cases (README "What it knows" has the counts).
# Issue 19 asks for 0.9 on SEEN together and 0.7 on the shape; not reached yet: frame 0 is still
# empty in some videos, and the tiny VAE draws every shape as a round blob (fill ~0.78).
T2V_RATE = 0.7  # colour, direction and presence in the first and last frame, all together
T2V_EACH = {"colour": 0.9, "direction": 0.85, "first": 0.7, "last": 0.9}
CONDITIONED_RATE = 0.8  # i2v and extend, SEEN together

def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline("tiny", device="cpu")


def _checks(frames: torch.Tensor, colour: str, shape: str, direction: str) -> dict[str, bool]:
    return judge(frames).matches(colour, direction, shape)


@pytest.fixture(scope="module")
def t2v(pipeline) -> list[dict[str, bool]]:
    out = []
    for colour, shape, direction in PROMPTS:
        for seed in SEEDS:
            frames = pipeline.run(GenerationRequest(mode="t2v", prompt=caption(colour, shape, direction),
                                                    seed=seed)).frames
            assert frames.shape == (17, 48, 64, 3)
            out.append(_checks(frames, colour, shape, direction))
    return out


def _rendered(i: int, colour: str, shape: str, direction: str, planned: int = 17):
    """A 17-frame clip of a scene whose motion is planned over `planned` frames (room to go on)."""
    scene = sample_scene(torch.Generator().manual_seed(200 + i), planned, colour=colour, shape=shape,
                         direction=direction)
    return scene, ((render(scene, 17) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)


@pytest.fixture(scope="module")
def i2v(pipeline, tmp_path_factory) -> list[dict[str, bool]]:
    """i2v from a rendered first frame (PNG); also whether frame 1 still shows the shape where
    the given frame had it ("kept")."""
    folder = tmp_path_factory.mktemp("i2v")
    out = []
    for i, (colour, shape, direction) in enumerate(PROMPTS):
        scene, clip = _rendered(i, colour, shape, direction)
        Image.fromarray(clip[0].numpy()).save(folder / f"{i}.png")
        for seed in SEEDS:
            frames = pipeline.run(GenerationRequest(mode="i2v", prompt=caption(colour, shape, direction),
                                                    seed=seed, image=folder / f"{i}.png")).frames
            ys, xs = (frames[1].float().amax(-1) > 80).nonzero(as_tuple=True)
            kept = bool(len(xs)) and bool(abs(xs.float().mean() - scene.x) < 8 and abs(ys.float().mean() - scene.y) < 8)
            out.append({**_checks(frames, colour, shape, direction), "kept": kept})
    return out


@pytest.fixture(scope="module")
def extend(pipeline, tmp_path_factory) -> list[dict[str, bool]]:
    """extend of a rendered 17-frame clip (MP4), judged on the 16 new frames only."""
    folder = tmp_path_factory.mktemp("extend")
    out = []
    for i, (colour, shape, direction) in enumerate(PROMPTS):
        _, clip = _rendered(i, colour, shape, direction, planned=33)
        video_io.write_mp4(clip, folder / f"{i}.mp4", pipeline.preset.fps)
        for seed in SEEDS:
            frames = pipeline.run(GenerationRequest(mode="extend", prompt=caption(colour, shape, direction),
                                                    seed=seed, video=folder / f"{i}.mp4", only_new=True)).frames
            assert frames.shape == (16, 48, 64, 3)
            out.append(_checks(frames, colour, shape, direction))
    return out


def _rate(cases: list[dict[str, bool]], keys=SEEN) -> float:
    return sum(all(c[k] for k in keys) for c in cases) / len(cases)


def _summary(cases: list[dict[str, bool]]) -> dict[str, int]:
    return {k: sum(c[k] for c in cases) for k in cases[0]}


def test_prompts_and_seeds_are_held_out():
    assert not set(PROMPTS) & set(TUNING_PROMPTS) and not set(SEEDS) & {5, 6, 7}


def test_t2v_shows_the_object_from_the_first_frame_with_the_prompted_colour_and_motion(t2v):
    assert _rate(t2v) >= T2V_RATE, _summary(t2v)
    for key, rate in T2V_EACH.items():
        assert _rate(t2v, (key,)) >= rate, (key, _summary(t2v))


def test_i2v_keeps_the_given_frame_and_moves_it_the_prompted_way(i2v):
    assert _rate(i2v, ("kept",)) >= CONDITIONED_RATE, _summary(i2v)
    assert _rate(i2v) >= CONDITIONED_RATE, _summary(i2v)


def test_extend_keeps_the_object_and_continues_the_motion(extend):
    assert _rate(extend) >= CONDITIONED_RATE, _summary(extend)
