"""The semantic judge names what a viewer sees in rendered shape videos."""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from engine.train import evaluate, synthetic
from engine.train.judge import MIN_SPEED, judge

pytestmark = pytest.mark.usefixtures("one_thread")


def _uint8(pixels: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    return ((pixels + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)


def test_rendered_clips_are_judged_right_in_every_respect():
    g = torch.Generator().manual_seed(0)
    for colour, shape, direction in itertools.product(synthetic.COLOURS, synthetic.SHAPES, synthetic.DIRECTIONS):
        scene = synthetic.sample_scene(g, colour=colour, shape=shape, direction=direction)
        verdict = judge(_uint8(synthetic.render(scene)))
        assert all(verdict.matches(colour, direction, shape).values()), (scene, verdict)


def test_fill_ratios_are_those_of_the_shapes():
    g = torch.Generator().manual_seed(1)
    fills = {s: judge(_uint8(synthetic.render(synthetic.sample_scene(g, shape=s)))).fill for s in synthetic.SHAPES}
    assert fills["square"] > 0.95 and 0.7 < fills["circle"] < 0.85 and fills["triangle"] < 0.62, fills


def test_an_object_fading_in_is_missing_from_the_first_frame():
    scene = synthetic.sample_scene(torch.Generator().manual_seed(2), colour="green", direction="right")
    frames = _uint8(synthetic.render(scene))
    ramp = torch.linspace(0.2, 1, 4)[:, None, None, None]
    frames[:4] = (frames[:4].float() * ramp).round().to(torch.uint8)  # frame 0 at 20 %: dark
    verdict = judge(frames)
    assert not verdict.first_present and verdict.last_present
    assert (verdict.colour, verdict.direction) == ("green", "right")
    frames[-1] = 0
    assert not judge(frames).last_present


def test_an_object_that_only_drifts_is_still():
    scene = synthetic.sample_scene(torch.Generator().manual_seed(3), colour="red", shape="square",
                                   direction="right")
    for speed, seen in ((0.0, "still"), (0.2, "still"), (0.4, "right"), (scene.speed, "right")):
        verdict = judge(_uint8(synthetic.render(dataclasses.replace(scene, speed=speed))))
        assert (verdict.direction, verdict.colour, verdict.shape) == (seen, "red", "square"), speed
    # The slowest continuations the evaluation asks for (the last 16 of a 33-frame plan) still move.
    for i, (colour, shape, direction) in enumerate(evaluate.HELD_OUT.prompts + evaluate.TUNING.prompts):
        scene, _ = evaluate.rendered(i, colour, shape, direction, planned=33)
        assert scene.speed > 1.4 * MIN_SPEED
        assert judge(_uint8(synthetic.render(scene, 33)[:, 17:])).direction == direction


def test_a_black_clip_shows_nothing():
    verdict = judge(torch.zeros(17, 48, 64, 3, dtype=torch.uint8))
    assert verdict == judge(torch.zeros(17, 48, 64, 3, dtype=torch.uint8))
    assert (verdict.colour, verdict.direction, verdict.shape, verdict.first_present) == (None, None, None, False)
