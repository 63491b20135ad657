"""The shipped tiny model (trained on engine.train.synthetic) draws what the prompt says.

Judged as a viewer would (`engine.train.judge`): the object at full brightness in the first and
in the last frame, its colour, the direction it moves, and its shape (bounding-box fill ratio).
The cases are `engine.train.evaluate.HELD_OUT`: 12 prompts x seeds 20, 21, 22, never used for
tuning (recipe and sampling defaults were tuned on `TUNING`, 12 other prompts x seeds 5, 6, 7);
`python -m engine.train.evaluate --set held-out` prints the same counts.
"""
from __future__ import annotations

import pytest

from engine import load_pipeline
from engine.train import evaluate
from engine.train.evaluate import HELD_OUT, TUNING, rate

pytestmark = pytest.mark.usefixtures("one_thread")

# What the shipped weights meet on the held-out cases (README "What it knows" has the counts): t2v
# 36/36 on each criterion and all four together, shape 31/36; i2v 36/36, extend 35/36. Issue 19
# asks for 0.9 on the four together and 0.7 for the shape, asserted at those levels.
T2V_RATE = 0.9  # colour, direction and presence in the first and last frame, all together
T2V_EACH = {"colour": 0.9, "direction": 0.9, "first": 0.9, "last": 0.9}
CONDITIONED_RATE = 0.8  # i2v and extend, all four together (the level)
SHAPE_RATE = 0.7  # the level (measured: 31/36)


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline("tiny", device="cpu")


@pytest.fixture(scope="module")
def t2v(pipeline) -> list[dict]:
    cases = evaluate.t2v(pipeline, HELD_OUT)
    assert all(c["frames"] == (17, 48, 64, 3) for c in cases)
    return cases


@pytest.fixture(scope="module")
def i2v(pipeline, tmp_path_factory) -> list[dict]:
    """i2v from a rendered first frame (PNG); "kept": frame 1 still shows the shape where the
    given frame had it."""
    return evaluate.i2v(pipeline, HELD_OUT, tmp_path_factory.mktemp("i2v"))


@pytest.fixture(scope="module")
def extend(pipeline, tmp_path_factory) -> list[dict]:
    """extend of a rendered 17-frame clip (MP4), judged on the 16 new frames only."""
    cases = evaluate.extend(pipeline, HELD_OUT, tmp_path_factory.mktemp("extend"))
    assert all(c["frames"] == (16, 48, 64, 3) for c in cases)
    return cases


def test_prompts_and_seeds_are_held_out():
    assert not set(HELD_OUT.prompts) & set(TUNING.prompts) and not set(HELD_OUT.seeds) & set(TUNING.seeds)


def test_t2v_shows_the_object_from_the_first_frame_with_the_prompted_colour_and_motion(t2v):
    assert rate(t2v) >= T2V_RATE, evaluate.counts(t2v)
    for key, share in T2V_EACH.items():
        assert rate(t2v, (key,)) >= share, (key, evaluate.counts(t2v))


def test_t2v_shapes_are_named_at_least_as_often_as_measured(t2v):
    assert rate(t2v, ("shape",)) >= SHAPE_RATE, evaluate.counts(t2v)


def test_i2v_keeps_the_given_frame_and_moves_it_the_prompted_way(i2v):
    assert rate(i2v, ("kept",)) >= CONDITIONED_RATE, evaluate.counts(i2v)
    assert rate(i2v) >= CONDITIONED_RATE, evaluate.counts(i2v)


def test_extend_keeps_the_object_and_continues_the_motion(extend):
    assert rate(extend) >= CONDITIONED_RATE, evaluate.counts(extend)
