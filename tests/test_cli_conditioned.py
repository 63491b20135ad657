"""`infinistar i2v`, `extend` and multi-prompt `t2v` through the CLI with the real tiny model."""
from __future__ import annotations

import av
import pytest

import engine
from cli_fakes import error_line, invoke
from engine.media.video_io import read_metadata
from media_fakes import pattern_frames, write_image, write_png_header_only, write_video

# Tiny models run ~20x faster on one thread than on two contended cores (the pipeline load too).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def real(monkeypatch, clean_env, tiny):
    """The CLI loads the real tiny model (once per module)."""
    loads = []

    def load(model, device="auto", on_event=None, **options):
        loads.append(model)
        assert model == "tiny"
        return tiny

    monkeypatch.setattr(engine, "load_pipeline", load)
    return loads


def decoded_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_multi_prompt_story_is_one_mp4(real, clean_env):
    (clean_env / "story.txt").write_text("# the end\nthe fox sleeps\n\n", encoding="utf-8")
    result = invoke("t2v", "a fox runs", "-m", "tiny", "--seed", "4", "--then", "the fox jumps",
                    "--story", "story.txt", "-o", "fox.mp4")
    assert result.exit_code == 0, result.stderr
    assert "segment 3/3: the fox sleeps" in result.stderr
    assert decoded_frames(clean_env / "fox.mp4") == 17 + 16 + 16
    meta = read_metadata(clean_env / "fox.mp4")
    assert [(s["prompt"], s["seed"]) for s in meta["segments"]] == [
        ("a fox runs", 4), ("the fox jumps", 5), ("the fox sleeps", 6)]


def test_i2v_converts_a_16_bit_image(real, clean_env):
    write_image(clean_env / "deep.png", 90, 60, mode="I;16")
    result = invoke("i2v", "deep.png", "-m", "tiny", "--seed", "1", "--aspect", "auto", "--json")
    assert result.exit_code == 0, result.stderr
    assert "trained at 16:9" in result.stderr
    assert decoded_frames(clean_env / "infinistar_deep_1.mp4") == 17
    assert read_metadata(clean_env / "infinistar_deep_1.mp4")["input"]["name"] == "deep.png"


def test_extend_only_new_and_seconds(real, clean_env):
    write_video(clean_env / "in.mp4", pattern_frames(20))
    result = invoke("extend", "in.mp4", "more", "-m", "tiny", "--seed", "2", "--seconds", "2", "--only-new",
                    "-o", "new.mp4")
    assert result.exit_code == 0, result.stderr
    assert decoded_frames(clean_env / "new.mp4") == 32  # two 1 s steps of 16 new frames


@pytest.mark.parametrize("command, setup, message, code", [
    (["i2v", "bad.png"], lambda d: (d / "bad.png").write_bytes(b"not an image at all"), "cannot read image", 1),
    (["i2v", "bomb.png"], lambda d: write_png_header_only(d / "bomb.png", 40000, 40000),
     "40000x40000: too large to decode", 1),
    (["i2v", "ok.png", "--seconds", "3"], lambda d: write_image(d / "ok.png"),
     "3 s videos are not available at tiny", 2),
    (["i2v", "ok.png", "--aspect", "wide"], lambda d: write_image(d / "ok.png"), "aspect must be 'auto' or W:H", 1),
    (["i2v", "missing.png"], lambda d: None, "missing.png: no such file", 1),
    (["extend", "bad.mp4"], lambda d: (d / "bad.mp4").write_bytes(b"\0" * 100), "cannot read", 1),
    (["extend", "empty.mp4"], lambda d: (d / "empty.mp4").write_bytes(b""), "cannot read", 1),
    (["extend", "still.png"], lambda d: write_image(d / "still.png"), "extend needs a video", 1),
    (["extend", "short.mp4"], lambda d: write_video(d / "short.mp4", pattern_frames(8)),
     "needs at least 1 s (17 frames at 16 fps)", 1),
    (["extend", "short.mp4", "--then", "x", "--prompt-file", "p.txt"],
     lambda d: write_video(d / "short.mp4", pattern_frames(8)), "cannot be combined with --prompt-file", 2),
])
def test_bad_inputs_are_one_line_errors(real, clean_env, command, setup, message, code):
    setup(clean_env)
    (clean_env / "p.txt").write_text("a\n", encoding="utf-8")
    result = invoke(*command, "-m", "tiny", "--seed", "1")
    assert result.exit_code == code, result.stderr
    assert message in error_line(result)
    assert not list(clean_env.glob("infinistar_*"))


def test_extend_seconds_checked_before_loading(real, clean_env):
    write_video(clean_env / "in.mp4", pattern_frames(4))
    result = invoke("extend", "in.mp4", "--res", "480p", "--seconds", "7")
    assert result.exit_code == 1 and "480p extends a video by 5 s per step" in error_line(result)
    assert real == []
