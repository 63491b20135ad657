"""The sampling loop against the official image sampler (APG 34/0.05, seed 41, fp32 attention)."""

from dataclasses import replace

import pytest
import torch

from engine.generate import sampling as sampling_mod
from engine.model.latent_bits import encode_bits, latent_from_bits
from engine.generate.sampling import TextCondition, guide, sample_latent
from engine.model.schedule import build_schedule
from golden_utils import GOLDEN_PRESET, GOLDEN_SAMPLING, golden, golden_meta, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = GOLDEN_PRESET  # the fixtures' schedule, not necessarily the tiny preset's


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def text():
    return TextCondition(golden("infer_t2i_fp32attn")["text_kv"])


def test_forced_bits_reproduce_logits_and_probabilities(model, text):
    g = golden("infer_t2i_fp32attn")
    forced = [g[f"bits.{i:02d}"] for i in range(8)]
    schedule = build_schedule(TINY, 1)
    out = sample_latent(model, schedule, text, GOLDEN_SAMPLING, torch.Generator().manual_seed(7),
                        forced_bits=forced, forced_scales=4, trace=True, keep_bits=True)
    assert len(out.trace) == 8
    for i, step in enumerate(out.trace):
        torch.testing.assert_close(step.raw_logits, g[f"raw_logits.{i:02d}"], atol=1e-4, rtol=0)
        torch.testing.assert_close(step.p1, g[f"p1.{i:02d}"], atol=1e-4, rtol=0)
        assert torch.equal(out.bits[i], forced[i])
    torch.testing.assert_close(out.latent, g["summed_codes"], atol=1e-6, rtol=0)


def test_free_sampling_seed_41_reproduces_bits(model, text):
    g = golden("infer_t2i_fp32attn")
    assert golden_meta("infer_t2i_fp32attn")["g_seed"] == GOLDEN_SAMPLING.seed == 41
    out = sample_latent(model, build_schedule(TINY, 1), text, GOLDEN_SAMPLING,
                        torch.Generator().manual_seed(41), keep_bits=True)
    for i, bits in enumerate(out.bits):
        assert torch.equal(bits, g[f"bits.{i:02d}"]), f"step {i}"
    assert torch.equal(out.latent, g["summed_codes"])


def test_video_kv_cache_path_matches_teacher_forced_logits(model):
    """Clip 1 attends to the cached last image scale: cached logits equal the dense forward's."""
    g, meta = golden("tf_video"), golden_meta("tf_video")
    schedule = build_schedule(TINY, 17)
    forced = encode_bits(g["raw_features"], schedule)
    out = sample_latent(model, schedule, TextCondition(g["text_kv"]), GOLDEN_SAMPLING,
                        forced_bits=forced, forced_scales=8, trace=True)
    start = 0
    for si, row in meta["rope_sid_real_sid"]:
        n = schedule.infos[si].tokens
        ref = g["logits_semantic" if schedule.infos[si].is_semantic else "logits_detail"][0, start:start + n]
        torch.testing.assert_close(out.trace[row].raw_logits[0], ref, atol=1e-4, rtol=0)
        start += n
    torch.testing.assert_close(out.latent, latent_from_bits(forced, schedule), atol=1e-6, rtol=0)


def test_video_events_and_cache_policy(model, text, monkeypatch):
    stored = []

    class Recorder(sampling_mod.KVCache):
        def store(self, layer, key, k, v):
            super().store(layer, key, k, v)
            if layer == 0:
                stored.append((key, tuple(self.keys())))

    monkeypatch.setattr(sampling_mod, "KVCache", Recorder)
    events = []
    out = sample_latent(model, build_schedule(TINY, 17), text, GOLDEN_SAMPLING, on_step=events.append)
    assert out.latent.shape == (1, 64, 5, 3, 4)
    assert len(events) == 14 and [e.step for e in events] == list(range(14))
    assert [(e.clip, e.scale, e.repetition) for e in events[:3]] == [(0, 0, 0), (0, 0, 1), (0, 1, 0)]
    assert events[-1].shape == (4, 3, 4) and events[-1].num_steps == 14
    # only the text and the image clip's last scale (referenced by clip 1) are ever cached
    assert stored == [("text", ("text",)), (3, ("text", 3))]


def test_text_to_image_end_to_end(model, text):
    events = []
    out = sample_latent(model, build_schedule(TINY, 1), text, GOLDEN_SAMPLING, on_step=events.append)
    assert out.latent.shape == (1, 64, 1, 3, 4) and len(events) == 8
    assert out.latent.abs().max() > 0


def test_partial_last_clip_round_trip(model, text):
    """Clips of 4 then 2 latent frames (the reference crashes here); forced bits sum back exactly."""
    config = replace(TINY.schedule, video_frames=33, pt_step=2)
    schedule = build_schedule(config, 25)
    assert schedule.clip_shapes == ((1, 3, 4), (4, 3, 4), (2, 3, 4))
    raw = torch.randn(1, 64, 7, 3, 4, generator=torch.Generator().manual_seed(0))
    forced = encode_bits(raw, schedule)
    out = sample_latent(model, schedule, text, GOLDEN_SAMPLING, forced_bits=forced,
                        forced_scales=len(schedule.scales))
    assert torch.equal(out.latent, latent_from_bits(forced, schedule))
    free = sample_latent(model, schedule, text, GOLDEN_SAMPLING)
    assert free.latent.shape == (1, 64, 7, 3, 4)


def test_negative_prompt_is_masked_not_padded(model):
    """The uncond row must not depend on how long the positive prompt is (no attended padding)."""
    feats = golden("infer_t2i_fp32attn")["text_kv"]
    negative = torch.randn(3, 48, generator=torch.Generator().manual_seed(1))
    schedule = build_schedule(TINY, 1)
    long = sample_latent(model, schedule, TextCondition(feats, negative), GOLDEN_SAMPLING, trace=True)
    short = sample_latent(model, schedule, TextCondition(feats[:3], negative), GOLDEN_SAMPLING, trace=True)
    torch.testing.assert_close(long.trace[0].raw_logits[1], short.trace[0].raw_logits[1], atol=1e-5, rtol=0)
    assert not torch.allclose(long.trace[0].raw_logits[0], short.trace[0].raw_logits[0])


def test_cfg_guidance_and_no_guidance(model, text):
    cond, uncond = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    cfg = replace(GOLDEN_SAMPLING, guidance="cfg", cfg_scale=3.0)
    torch.testing.assert_close(guide(torch.cat([cond, uncond]), cfg, 3.0), 3 * cond - 2 * uncond)
    plain = sample_latent(model, build_schedule(TINY, 1), text, replace(cfg, cfg_scale=1.0), trace=True)
    assert plain.trace[0].raw_logits.shape[0] == 1


def test_video_detail_guidance_changes_only_the_video_clips_detail_scales(model):
    """`cfg_video_detail` guides the detail scales of clips > 0 with its own scale; every other
    scale keeps `cfg_scale` (all scales forced, so both runs see the same logits)."""
    g = golden("tf_video")
    schedule = build_schedule(TINY, 17)
    forced = encode_bits(g["raw_features"], schedule)
    cfg = replace(GOLDEN_SAMPLING, guidance="cfg", cfg_scale=3.0, tau_image=1.0, tau_video=1.0)
    runs = [sample_latent(model, schedule, TextCondition(g["text_kv"]), s, forced_bits=forced,
                          forced_scales=len(schedule.infos), trace=True)
            for s in (cfg, replace(cfg, cfg_video_detail=1.0))]
    steps = [info for info in schedule.infos for _ in range(info.repetitions)]
    assert len(steps) == len(runs[0].trace) == len(runs[1].trace)
    kinds = set()
    for info, plain, split in zip(steps, *(r.trace for r in runs)):
        torch.testing.assert_close(split.raw_logits, plain.raw_logits, atol=0, rtol=0)
        detail = info.clip > 0 and not info.is_semantic
        kinds.add(detail)
        expected = split.raw_logits[:1] if detail else guide(split.raw_logits, cfg, 3.0)
        torch.testing.assert_close(split.p1, expected.view(1, -1, 2).softmax(dim=-1)[0, :, 1])
        assert torch.equal(split.p1, plain.p1) != detail
    assert kinds == {True, False}


def test_max_repeat_times_caps_steps(model, text):
    events = []
    sample_latent(model, build_schedule(TINY, 17), text, replace(GOLDEN_SAMPLING, max_repeat_times=1),
                  on_step=events.append)
    assert len(events) == 8 and all(e.repetition == 0 for e in events)


def test_missing_forced_bits_are_refused(model, text):
    with pytest.raises(ValueError, match="needs 8 bit tensors"):
        sample_latent(model, build_schedule(TINY, 1), text, GOLDEN_SAMPLING, forced_bits=[], forced_scales=4)


def test_bf16_blocks_run_and_stay_close(text):
    """The CUDA dtype policy (bf16 blocks, fp32 embeddings/heads), exercised on CPU."""
    fp32 = tiny_model()
    assert fp32.to_inference_dtype("cpu").block_dtype == torch.float32
    mixed = tiny_model()
    for block in mixed.layers():
        block.to(torch.bfloat16)
    assert mixed.head.weight.dtype == torch.float32 and mixed.block_dtype == torch.bfloat16
    g = golden("infer_t2i_fp32attn")
    forced = [g[f"bits.{i:02d}"] for i in range(8)]
    out = sample_latent(mixed, build_schedule(TINY, 1), text, GOLDEN_SAMPLING, forced_bits=forced,
                        forced_scales=4, trace=True)
    assert out.trace[-1].raw_logits.dtype == torch.float32
    torch.testing.assert_close(out.trace[-1].raw_logits, g["raw_logits.07"], atol=0.1, rtol=0.05)


def test_visual_conditions_are_cached_and_attended(model, monkeypatch):
    """Interactive-style conditions see only themselves; every visual step attends to them."""
    from engine.generate.sampling import ConditionTokens
    from engine.model.schedule import build_segment_schedule

    captured = {}

    class Recorder(sampling_mod.KVCache):
        def store(self, layer, key, k, v):
            super().store(layer, key, k, v)
            if layer == 0:
                captured.setdefault(key, []).append(k.clone())

    monkeypatch.setattr(sampling_mod, "KVCache", Recorder)
    schedule = build_segment_schedule(TINY)
    assert schedule.scales == ((4, 1, 1), (4, 2, 2), (4, 2, 3), (4, 3, 4)) and schedule.num_steps == 8
    gen = torch.Generator().manual_seed(3)
    conditions = [
        ConditionTokens("semantic_condition", torch.randn(1, 64, 4, 2, 2, generator=gen), (1, 2, 3, 4), 800),
        ConditionTokens("detail_condition", torch.randn(1, 64, 3, 3, 4, generator=gen), (0, 3, 4), 801),
    ]
    feats = golden("infer_t2i_fp32attn")["text_kv"]
    with_cond = sample_latent(model, schedule, TextCondition(feats), GOLDEN_SAMPLING, conditions=conditions, trace=True)
    other_text = sample_latent(model, schedule, TextCondition(feats.flip(0)), GOLDEN_SAMPLING, conditions=conditions)
    plain = sample_latent(model, schedule, TextCondition(feats), GOLDEN_SAMPLING, trace=True)
    assert with_cond.latent.shape == (1, 64, 4, 3, 4)
    for key in ("semantic_condition", "detail_condition"):
        first, second = captured[key]
        assert torch.equal(first, second)  # independent of the text: conditions attend to themselves
    assert not torch.allclose(with_cond.trace[0].raw_logits, plain.trace[0].raw_logits)
    assert other_text.latent.shape == with_cond.latent.shape
