"""Training code: teacher forcing equals the KV-cached sampler, and a few steps reduce the losses."""

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from engine import presets
from engine.train import synthetic
from engine.presets import SamplingConfig
from engine.generate.sampling import TextCondition, sample_latent
from engine.model.schedule import build_schedule
from engine.train.config import TrainConfig
from engine.train.transformer_phase import (corrected_bits, init_transformer, random_reps, step_index, teacher_forced_logits,
                                            train_transformer, uncached_reps)
from engine.train.packed_attention import forward_visible, packed_visibility, row_groups
from engine.train.vae_phase import (autoencoder_loss, current_frame_only, train_vae, vae_decode_train,
                                    vae_raw_features)
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE, vae_config
from engine.model.vae_blocks import CausalConv3d

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = presets.get("tiny")


@pytest.fixture(scope="module")
def model():
    model = init_transformer(InfinityTransformer(TINY.transformer), seed=3)
    # The official init leaves the heads nearly flat; widen it so the comparison means something.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("which", ["last", "first"])
def test_teacher_forced_logits_equal_the_sampler(model, which):
    schedule = build_schedule(TINY, 17)
    text = torch.randn(9, TINY.transformer.text_channels, generator=torch.Generator().manual_seed(0))
    sampling = SamplingConfig(cfg_scale=1.0)
    out = sample_latent(model, schedule, TextCondition(text), sampling, torch.Generator().manual_seed(5),
                        keep_bits=True, trace=True)
    bits = out.bits
    reps = [i.repetitions - 1 if which == "last" or i.last_use > i.index else 0 for i in schedule.infos]
    assert any(r > 0 for r in reps) and (which == "last" or any(r == 0 for r in reps))
    logits = teacher_forced_logits(model, schedule, text[None], None, bits, reps)
    for info, lg in zip(schedule.infos, logits):
        cached = out.trace[step_index(schedule, info.index, reps[info.index])].raw_logits
        torch.testing.assert_close(lg, cached, atol=2e-5, rtol=1e-4)


def test_uncached_repetitions_are_trained_as_the_sampler_runs_them(model):
    """The extra segments (earlier repetitions of cached scales) get the sampler's logits too,
    and adding them changes nothing for the other scales."""
    schedule = build_schedule(TINY, 17)
    text = torch.randn(7, TINY.transformer.text_channels, generator=torch.Generator().manual_seed(3))
    out = sample_latent(model, schedule, TextCondition(text), SamplingConfig(cfg_scale=1.0),
                        torch.Generator().manual_seed(6), keep_bits=True, trace=True)
    reps = random_reps(schedule, torch.Generator().manual_seed(1))
    extra = uncached_reps(schedule, torch.Generator().manual_seed(1))
    cached = [i for i in schedule.infos if i.last_use > i.index]
    assert cached and all(i.repetitions > 1 for i in cached)  # tiny: the image's last scale
    # one earlier (not the last, cached) repetition of every cached scale
    assert [si for si, _ in extra] == [i.index for i in cached]
    assert all(0 <= rep < schedule.infos[si].repetitions - 1 for si, rep in extra)
    with_extra = teacher_forced_logits(model, schedule, text[None], None, out.bits, reps, extra)
    plain = teacher_forced_logits(model, schedule, text[None], None, out.bits, reps)
    assert len(with_extra) == len(plain) + len(extra)
    for a, b in zip(with_extra, plain):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    for (si, rep), lg in zip(extra, with_extra[len(plain):]):
        torch.testing.assert_close(lg, out.trace[step_index(schedule, si, rep)].raw_logits, atol=2e-5, rtol=1e-4)


def test_padded_text_in_a_batch_changes_nothing(model):
    schedule = build_schedule(TINY, 17)
    g = torch.Generator().manual_seed(1)
    long, short = torch.randn(9, 48, generator=g), torch.randn(5, 48, generator=g)
    bits = sample_latent(model, schedule, TextCondition(short), SamplingConfig(cfg_scale=1.0),
                         torch.Generator().manual_seed(2), keep_bits=True).bits
    reps = random_reps(schedule, torch.Generator().manual_seed(0))
    padded = torch.zeros(2, 9, 48)
    padded[0], padded[1, :5] = long, short
    valid = torch.arange(9)[None] < torch.tensor([[9], [5]])
    batch = teacher_forced_logits(model, schedule, padded, valid, [torch.cat([b, b]) for b in bits], reps)
    alone = teacher_forced_logits(model, schedule, short[None], None, bits, reps)
    for a, b in zip(batch, alone):
        torch.testing.assert_close(a[1:], b, atol=2e-5, rtol=1e-4)


def test_synthetic_clips_are_deterministic_and_captioned():
    a, caps = synthetic.batch(4, 3)
    b, _ = synthetic.batch(4, 3)
    assert a.shape == (3, 3, 17, 48, 64) and torch.equal(a, b)
    assert all(c.split()[1] in synthetic.COLOURS and c.split()[2] in synthetic.SHAPES for c in caps)
    scene = synthetic.sample_scene(torch.Generator().manual_seed(0), colour="red", direction="right")
    mask = synthetic.shape_mask(scene, 17, 48, 64)
    xs = torch.arange(64.0)
    cx = [(mask[t].sum(0) * xs).sum() / mask[t].sum() for t in (0, 16)]
    assert cx[1] - cx[0] > 10 and mask[0].max() == 1  # moves right, stays inside the frame
    assert scene.caption.startswith("a red ") and " moving right" in scene.caption


def test_vae_steps_reduce_the_loss():
    torch.manual_seed(0)
    vae = VideoVAE(vae_config(TINY.vae)).train()
    frames, _ = synthetic.batch(0, 4, 1)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        loss = autoencoder_loss(vae, frames, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_vae_training_is_an_autoencoder_on_frames_then_sets_the_latent_scale():
    torch.manual_seed(0)
    cfg = replace(TrainConfig(), vae_steps=3, vae_batch=2, latent_scale=0.25)
    logged = []
    vae = train_vae(TINY, cfg, log=lambda phase, step, m: logged.append((phase, step, sorted(m))))
    assert logged == [("vae", step, ["loss"]) for step in range(3)]
    assert float(vae.scale_learnable_parameters[0]) == 0.25
    causal = [m.conv.weight for m in vae.modules() if isinstance(m, CausalConv3d) and m.time_pad > 0]
    assert causal and not any(w[:, :, :-1].any() for w in causal)  # time taps on the current frame
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    # The scale multiplies the encoder's latent and the decoder divides it out: same decode.
    frames, _ = synthetic.batch(1, 1, 1)
    with torch.no_grad():
        latent = vae_raw_features(vae, frames, torch.Generator().manual_seed(0))
        decoded = vae_decode_train(vae, latent)
        vae.scale_learnable_parameters[0] = 1.0
        unscaled = vae_raw_features(vae, frames, torch.Generator().manual_seed(0))
        assert torch.allclose(latent, 0.25 * unscaled)
        assert torch.allclose(vae_decode_train(vae, unscaled), decoded, atol=1e-5)


def test_time_taps_on_the_current_frame_keep_a_frame_and_stop_clips_mixing_their_frames():
    torch.manual_seed(0)
    vae = VideoVAE(vae_config(TINY.vae)).eval()
    frame, _ = synthetic.batch(2, 1, 1)
    clip, _ = synthetic.batch(3, 1, 17)
    other = clip.clone()  # frames 1-4 (latent frame 1) from another clip
    other[:, :, 1:5] = synthetic.batch(4, 1, 17)[0][:, :, 1:5]

    def decoded(pixels):
        return vae_decode_train(vae, vae_raw_features(vae, pixels, torch.Generator().manual_seed(0)))

    with torch.no_grad():
        single, mixed = decoded(frame), (decoded(clip) - decoded(other)).abs().amax(dim=(0, 1, 3, 4))
        current_frame_only(vae)
        assert torch.allclose(decoded(frame), single, atol=1e-5)  # the causal padding repeats frame 0
        own = (decoded(clip) - decoded(other)).abs().amax(dim=(0, 1, 3, 4))
    # Before, changing frames 1-4 changed every later frame; now only frames 1-4 themselves.
    assert (mixed[5:] > 1e-3).all()
    assert (own[1:5] > 1e-3).all() and not own[0] and not own[5:].any()


def test_a_training_run_without_data_is_refused():
    with pytest.raises(ValueError, match="vae_batch must be at least 1"):
        TrainConfig(vae_batch=0)
    result = subprocess.run([sys.executable, "-m", "engine.train", "--out", "unused", "--vae-batch", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("vae_batch must be at least 1")


def test_self_correction_flips_only_the_fed_bits_and_labels_what_corrects_them():
    from engine.model.latent_bits import encode_bits, latent_from_bits
    schedule = build_schedule(TINY, 17)
    raw = torch.randn(2, 64, schedule.latent_frames, 3, 4, generator=torch.Generator().manual_seed(0)) * 0.4
    clean = encode_bits(raw, schedule)
    fed, labels = corrected_bits(raw, schedule)
    assert all(torch.equal(a, c) and torch.equal(b, c) for a, b, c in zip(fed, labels, clean))
    # Clip 0 is not flipped: it is quantized as alone; clip 1 is fed ~30 % flipped bits.
    fed, labels = corrected_bits(raw, schedule, torch.tensor([0.0, 0.3]), torch.Generator().manual_seed(1))
    assert all(torch.equal(a[0], c[0]) and torch.equal(b[0], c[0]) for a, b, c in zip(fed, labels, clean))
    flipped = torch.cat([(a[1] != b[1]).flatten() for a, b in zip(fed, labels)]).float().mean()
    assert 0.25 < flipped < 0.35
    # The labels correct the flips: the fed bits, flips included, sum closer to the latent than the
    # clean bits flipped as often without correction.
    assert not torch.equal(labels[-1][1], clean[-1][1])
    noise = torch.Generator().manual_seed(2)
    uncorrected = [torch.where(torch.rand(c.shape, generator=noise) < 0.3, 1 - c, c) for c in clean]
    assert (latent_from_bits(fed, schedule)[1] - raw[1]).norm() < (latent_from_bits(uncorrected, schedule)[1] - raw[1]).norm()


def test_transformer_steps_reduce_the_loss():
    torch.manual_seed(0)
    vae = VideoVAE(vae_config(TINY.vae)).eval().requires_grad_(False)
    cfg = replace(TrainConfig(), videos=4, steps=25, batch=4, warmup=1, lr=3e-3)
    losses = []
    model, text = train_transformer(TINY, vae, cfg, log=lambda phase, step, m: losses.append(m["loss"]))
    # A random VAE's bits are mostly noise: 25 steps take ~0.03 off the mean of five steps' losses.
    assert len(losses) == 25 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.02
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in text.model.parameters())


def test_attending_to_the_visible_keys_only_equals_the_masked_forward(model):
    """`forward_visible` (per group of identical mask rows, visible keys only) gives the masked
    `forward_blocks` result, text padding included."""
    schedule = build_schedule(TINY, 33)
    extra = [(i.index, 0) for i in schedule.infos if i.last_use > i.index]
    mask = packed_visibility(schedule, 6, extra)
    groups = row_groups(mask)
    assert sum(e - s for s, e, _ in groups) == mask.shape[0] and len(groups) == len(schedule.infos) + len(extra) + 1
    for s, e, cols in groups:
        assert torch.equal(mask[s:e], mask[s:s + 1].expand(e - s, -1)) and torch.equal(mask[s].nonzero().flatten(), cols)
    g = torch.Generator().manual_seed(4)
    n, c = mask.shape[0], TINY.transformer.embed_dim
    x = torch.randn(2, n, c, generator=g)
    angle = torch.rand(n, TINY.transformer.head_dim // 2, generator=g) * 6.3
    rope = torch.stack([angle.cos(), angle.sin()])
    keys = torch.ones(2, n, dtype=torch.bool)
    keys[1, -2:] = False  # the second sample's text is two tokens shorter
    dense = model.forward_blocks(x, rope, attn_mask=mask[None, None] & keys[:, None, None, :])
    torch.testing.assert_close(forward_visible(model, x, rope, mask, keys), dense, atol=2e-5, rtol=1e-4)
