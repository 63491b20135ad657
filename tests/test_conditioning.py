"""i2v, extend and story segments on the tiny model: forced latents, frame arithmetic, seeds, inputs."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import engine.generate.pipeline as pipeline_module
from engine import presets
from engine.generate import conditioning
from engine.generate.conditioning import ConditioningError, encode_reference
from engine.generate.segments import extend_layout, extend_steps
from engine.media import images
from engine.media.images import load_image, open_image, transform_image
from engine.media.videos import read_resampled
from engine.errors import MediaError
from engine.model.latent_bits import latent_from_bits
from engine.request import GenerationRequest
from engine.model.schedule import build_schedule
from media_fakes import (flat_frames, pattern_frames, tiny_pipeline, write_image, write_png_header_only,
                         write_video)

TINY = presets.get("tiny")


def read_video_resampled(path, fps, size_for):
    """The extend reader's time-based resampling of a whole video."""
    return read_resampled(path, fps, size_for, transform_image)

# Tiny models run ~20x faster on one thread than on two contended cores (the pipeline load too).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture
def sampled(monkeypatch):
    """Every sample_latent call the pipeline makes: (kwargs, SampleResult)."""
    calls = []
    real = pipeline_module.sample_latent

    def record(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs, out))
        return out

    monkeypatch.setattr(pipeline_module, "sample_latent", record)
    return calls


def official_transform(image: Image.Image, height: int, width: int) -> np.ndarray:
    """pipeline spec §5.4 step 2, written out independently."""
    w, h = image.size
    if w / h <= width / height:
        new_w, new_h = width, int(width / (w / h))
    else:
        new_w, new_h = int((w / h) * height), height
    array = np.array(image.resize((new_w, new_h), resample=Image.LANCZOS))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return array[top:top + height, left:left + width]


@pytest.mark.parametrize("size", [(150, 100), (100, 150), (64, 48), (641, 479)])
def test_transform_is_the_official_one(tmp_path, size):
    path = write_image(tmp_path / "in.png", *size)
    got = transform_image(load_image(open_image(path), 64), 48, 64)
    expected = official_transform(Image.open(path).convert("RGB"), 48, 64)
    assert got.shape == (48, 64, 3) and np.array_equal(got.numpy(), expected)
    unit = conditioning.to_unit(got[None])
    assert unit.shape == (1, 3, 1, 48, 64) and unit.min() >= -1 and unit.max() <= 1


def test_huge_images_are_shrunk_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "PRESHRINK_PIXELS", 100_000)
    jpeg = tmp_path / "big.jpg"
    Image.fromarray(pattern_frames(1, 750, 1000)[0]).save(jpeg, quality=90)
    rgb = load_image(open_image(jpeg), 64)
    assert rgb.size == (250, 188)  # decoded at 1/4 scale (DCT scaling), still >= 2 x 64 on the short side
    png = tmp_path / "big.png"
    Image.fromarray(pattern_frames(1, 600, 800)[0]).save(png)
    assert load_image(open_image(png), 64).size == (200, 150)  # decoded, then reduce(4)
    # the shrunk route stays close to the exact transform
    exact = official_transform(Image.open(png).convert("RGB"), 48, 64).astype(float)
    assert np.abs(transform_image(load_image(open_image(png), 64), 48, 64).numpy() - exact).mean() < 4
    with pytest.raises(MediaError, match=r"40000x40000: too large to decode"):
        load_image(open_image(write_png_header_only(tmp_path / "bomb.png", 40000, 40000)), 64)


def test_alpha_and_16_bit_images_are_converted(tmp_path):
    rgba = load_image(open_image(write_image(tmp_path / "a.png", 64, 48, mode="RGBA")), 64)
    assert rgba.mode == "RGB" and np.all(np.array(rgba)[:24] == 255)  # transparent -> white
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((48, 64), 65535 // 2, dtype=np.uint16)).save(deep)
    gray = np.array(load_image(open_image(deep), 64))
    assert gray.shape == (48, 64, 3) and np.all(np.abs(gray.astype(int) - 128) <= 1)  # scaled, not clipped at 255


def test_video_is_resampled_to_the_model_fps(tmp_path):
    fast = write_video(tmp_path / "fast.mp4", flat_frames(20), fps=32)
    frames, facts = read_video_resampled(fast, 16, lambda w, h: (48, 64))
    assert facts["frames"] == 20 and facts["fps"] == 32 and frames.shape == (10, 48, 64, 3)
    levels = frames.float().mean(dim=(1, 2, 3))
    assert torch.allclose(levels, torch.arange(10, 200, 20, dtype=torch.float32), atol=3)  # frames 0, 2, 4, ...
    slow = write_video(tmp_path / "slow.mp4", flat_frames(5), fps=8)
    frames, _ = read_video_resampled(slow, 16, lambda w, h: (48, 64))
    levels = frames.float().mean(dim=(1, 2, 3))
    # each source frame is on screen for 1/8 s = two output frames
    assert torch.allclose(levels, torch.tensor([10., 10, 20, 20, 30, 30, 40, 40, 50, 50]), atol=3)


def test_extend_arithmetic_per_preset():
    for name, frames, window, forced in (("480p", 161, 81, 28), ("720p", 81, 1, 15), ("tiny", 33, 17, 8)):
        schedule, got_window, got_forced = extend_layout(presets.get(name))
        assert (schedule.num_frames, got_window, got_forced) == (frames, window, forced), name
    assert extend_steps(presets.get("480p"), 10) == 2 and extend_steps(TINY, 3) == 3
    with pytest.raises(ConditioningError, match="multiple of 5"):
        extend_steps(presets.get("480p"), 7)


def test_i2v_forces_the_encoded_image(pipe, sampled, tmp_path):
    path = write_image(tmp_path / "cat.png")
    request = GenerationRequest(mode="i2v", prompt="a cat", seed=5, image=path)
    result = pipe.run(request)
    kwargs, out = sampled[0]
    assert kwargs["forced_scales"] == 4 and result.frames.shape == (17, 48, 64, 3)
    pixels = transform_image(load_image(open_image(path), 64), 48, 64)
    bits = encode_reference(pipe.components.vae, pixels[None], build_schedule(TINY, 1), seed=5)
    assert torch.equal(out.latent[:, :, :1], latent_from_bits(bits, build_schedule(TINY, 1)))
    meta = result.metadata
    assert meta["input"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["input"]["name"] == "cat.png" and meta["forced_scales"] == 4 and meta["encode_seed"] == 5
    again = pipe.run(request)
    other = pipe.run(GenerationRequest(mode="i2v", prompt="a cat", seed=6, image=path))
    assert torch.equal(again.frames, result.frames)
    assert not torch.equal(other.frames, result.frames)
    assert not torch.equal(sampled[2][1].latent[:, :, :1], out.latent[:, :, :1])  # the posterior sample is seeded too


def test_extend_forces_the_last_window(pipe, sampled, tmp_path):
    source = write_video(tmp_path / "in.mp4", pattern_frames(24))
    result = pipe.run(GenerationRequest(mode="extend", prompt="more", seed=3, video=source))
    kwargs, out = sampled[0]
    assert kwargs["forced_scales"] == 8
    # output = the 7 input frames before the window + the decoded window (17) + 16 new frames
    assert result.frames.shape[0] == 7 + 33 and result.decoded.shape[0] == 33
    inputs, _ = read_video_resampled(source, 16, lambda w, h: (48, 64))
    assert torch.equal(result.frames[:7], inputs[:7])
    window_schedule = build_schedule(TINY.schedule, 17)
    bits = encode_reference(pipe.components.vae, inputs[7:], window_schedule, seed=3)
    window_latent = latent_from_bits(bits, window_schedule)
    assert torch.equal(out.latent[:, :, :5], window_latent)
    # the first output frames are the decoded re-quantized window (frame 0 smoothed, spec §5.5 step 7)
    assert torch.equal(result.frames[7:24], pipe.decode(window_latent))
    window = result.metadata["window"]
    assert (window["start_frame"], window["frames"], window["from_start"]) == (7, 17, False)
    assert window["source_frames"] == list(range(7, 24))  # 16 fps in, 16 fps out: frame for frame

    new = pipe.run(GenerationRequest(mode="extend", prompt="more", seed=3, video=source, only_new=True,
                                     from_start=True))
    assert new.frames.shape[0] == 16 and torch.equal(new.frames, new.decoded[17:])
    # --from-start: the official stretch of the first second over 17 frames, linspace(0, 15, 17) rounded down
    official = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    bits = encode_reference(pipe.components.vae, inputs[official], window_schedule, seed=3)
    assert torch.equal(sampled[1][1].latent[:, :, :5], latent_from_bits(bits, window_schedule))
    assert new.metadata["window"]["start_frame"] == 0 and new.metadata["window"]["source_frames"] == official


def test_extend_window_length(pipe, tmp_path):
    short = write_video(tmp_path / "short.mp4", pattern_frames(9))
    request = GenerationRequest(mode="extend", prompt="", seed=0, video=short)
    with pytest.raises(ConditioningError, match=r"short.mp4 is too short \(0.56 s\).*at least 1 s \(17 frames at 16 fps\)"):
        conditioning.resolve(pipe.preset, pipe.components.vae, request, 0)
    one_second = write_video(tmp_path / "one.mp4", pattern_frames(16))  # 1 s exactly: last frame repeated
    cond = conditioning.resolve(pipe.preset, pipe.components.vae,
                                GenerationRequest(mode="extend", prompt="", seed=0, video=one_second), 0)
    assert cond.forced_scales == 8 and cond.metadata["window"]["frames"] == 17 and len(cond.prefix) == 0
    with pytest.raises(ConditioningError, match="one extend run adds 1 s"):
        conditioning.resolve(pipe.preset, pipe.components.vae,
                             GenerationRequest(mode="extend", prompt="", seed=0, video=one_second, seconds=2), 0)


def test_story_segments_continue_the_video(pipe, sampled):
    from engine.generate.segments import story_requests

    first = GenerationRequest(mode="t2v", prompt="a", seed=9)
    results = list(pipe.run_story(story_requests(first, ["b", "c"])))
    assert [len(r.frames) for r in results] == [17, 16, 16]
    assert [r.metadata["seed"] for r in results] == [9, 10, 11]
    assert [kwargs["forced_scales"] for kwargs, _ in sampled] == [0, 8, 8]
    # segment 2 conditions on the last 17 frames of segment 1
    window_schedule = build_schedule(TINY.schedule, 17)
    bits = encode_reference(pipe.components.vae, results[0].decoded[-17:], window_schedule, seed=10)
    assert torch.equal(sampled[1][1].latent[:, :, :5], latent_from_bits(bits, window_schedule))


def test_interact_recipe_story(pipe, sampled):
    """The InfinityStar-Interact continuation (spec §5.6) on the tiny model posing as `interact`."""
    import torch.nn.functional as F

    from engine.generate.pipeline import Pipeline
    from engine.generate.segments import story_requests

    interact = Pipeline(replace(pipe.components, preset=replace(TINY, name="interact", frames=(17,), continuation="interact")))
    results = list(interact.run_story(story_requests(GenerationRequest(mode="t2v", prompt="a", seed=1), ["b", "c"])))
    assert [len(r.frames) for r in results] == [17, 16, 16]
    calls = [kwargs for kwargs, _ in sampled]
    assert [len(k["conditions"]) for k in calls] == [0, 2, 2] and {k["forced_scales"] for k in calls} == {0}
    window, new2 = sampled[0][1].latent, sampled[1][1].latent
    assert window.shape[2] == 5 and new2.shape[2] == 4
    semantic, detail = calls[1]["conditions"]
    assert (semantic.key, semantic.frames, semantic.rope_row) == ("semantic_condition", (1, 2, 3, 4), 800)
    assert torch.equal(semantic.codes, F.interpolate(window[:, :, 1:], size=(4, 2, 3), mode="area"))
    assert (detail.key, detail.frames, detail.rope_row) == ("detail_condition", (0, 3, 4), 801)
    assert torch.equal(detail.codes, torch.cat([window[:, :, :1], window[:, :, 3:5]], dim=2))
    # the window's last 4 latents are decoded with the new 4; the last 16 frames are kept
    assert torch.equal(results[1].frames, interact.decode(torch.cat([window[:, :, 1:], new2], dim=2))[-16:])
    # segment 3 continues [last old latent, 4 new] and keeps the story's first latent
    detail3 = calls[2]["conditions"][1]
    assert torch.equal(detail3.codes, torch.cat([window[:, :, :1], new2[:, :, 2:4]], dim=2))
    assert results[1].metadata["prompt_sent"] == "<<<t=1s>>>b" and results[1].metadata["recipe"] == "interact"


def test_interact_extend_encodes_the_window_raw(pipe, tmp_path):
    from engine.generate.pipeline import Pipeline

    interact = Pipeline(replace(pipe.components, preset=replace(TINY, name="interact", frames=(17,), continuation="interact")))
    source = write_video(tmp_path / "in.mp4", pattern_frames(20))
    cond = conditioning.resolve(interact.preset, interact.components.vae,
                                GenerationRequest(mode="extend", prompt="", seed=2, video=source), 0)
    inputs, _ = read_video_resampled(source, 16, lambda w, h: (48, 64))
    vae = pipe.components.vae
    raw = vae.encode_raw_features(conditioning.to_unit(inputs[3:]), generator=torch.Generator().manual_seed(2))
    assert torch.equal(cond.latent_prefix, raw[:, :, 1:]) and torch.equal(cond.first_latent, raw[:, :, :1])
    assert torch.equal(cond.prefix, inputs) and cond.skip == 13 and cond.forced_bits is None
    assert cond.schedule.scales == ((4, 1, 1), (4, 2, 2), (4, 2, 3), (4, 3, 4))
