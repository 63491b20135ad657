"""Video VAE: official key layout, golden parity (tiny weights), chunking, streaming, validation."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import InfinistarError, VAEInputError, VAEWeightsError
from engine.model.vae import (VideoVAE, decoder_chunks, encoder_chunks, fold_2x2, gaussian_posterior,
                        pixels_to_uint8, smooth_first_frame, unfold_2x2, vae_config)

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny_state() -> dict:
    return load_file(GOLDEN / "tiny_vae.safetensors")


@pytest.fixture(scope="module")
def vae(tiny_state) -> VideoVAE:
    model = VideoVAE(vae_config("golden"))
    model.load_official_state_dict(tiny_state)
    return model.eval()


@pytest.fixture(scope="module")
def dec() -> dict:
    return load_file(GOLDEN / "vae_decode.safetensors")


@pytest.fixture(scope="module")
def enc() -> dict:
    return load_file(GOLDEN / "vae_encode_image.safetensors")


def golden_image(enc: dict) -> torch.Tensor:
    """The official transform: uint8 -> [0,1] -> 2x-1, as [1,3,1,H,W]."""
    x = enc["video_u8"].float() / 255
    return (x + x - 1).permute(3, 0, 1, 2)[None]


# ------------------------------------------------------------------------------- structure

def test_released_config_matches_official_keys_on_meta_device():
    table = json.loads((FIXTURES / "keys" / "vae.json").read_text())
    with torch.device("meta"):
        model = VideoVAE(vae_config("released"))
    state = model.state_dict()
    assert list(state) == list(table)
    for key, entry in table.items():
        assert list(state[key].shape) == entry[:-1], key
        assert str(state[key].dtype) == f"torch.{entry[-1]}", key
    assert sum(p.numel() for p in model.parameters()) == 184_659_383


def test_tiny_config_matches_golden_file(tiny_state):
    model = VideoVAE(vae_config("golden"))
    state = model.state_dict()
    assert state.keys() == tiny_state.keys()
    assert all(state[k].shape == tiny_state[k].shape for k in state)
    assert sum(p.numel() for p in model.parameters()) == 142_873
    # The masks we build are the official constants (64-bit one wraps at 2^63).
    for key in ("quantizer.lfq_semantic.mask", "quantize.lfq_detail.mask"):
        assert torch.equal(state[key], tiny_state[key])


def test_unknown_config_name():
    with pytest.raises(KeyError, match="unknown VAE config"):
        vae_config("huge")


def test_load_without_mask_buffers(tiny_state, dec):
    state = {k: v for k, v in tiny_state.items() if not k.endswith(".mask")}
    assert len(state) == len(tiny_state) - 4
    model = VideoVAE(vae_config("golden"))
    model.load_official_state_dict(state)
    assert torch.equal(model.quantize.lfq_detail.mask, tiny_state["quantizer.lfq_detail.mask"])
    out = model.decode(dec["z_t1"])
    torch.testing.assert_close(out, dec["pixels_t1"], atol=ATOL, rtol=0)


def test_load_refuses_missing_extra_or_misshaped_weights(tiny_state):
    model = VideoVAE(vae_config("golden"))
    missing = {k: v for k, v in tiny_state.items() if k != "proj_up.bias"}
    with pytest.raises(VAEWeightsError, match=r"1 missing .*proj_up\.bias"):
        model.load_official_state_dict(missing)
    extra = dict(tiny_state, **{"ema.decoder.x": torch.zeros(1)})
    with pytest.raises(VAEWeightsError, match="1 unexpected"):
        model.load_official_state_dict(extra)
    with torch.device("meta"):
        released = VideoVAE(vae_config("released"))
    with pytest.raises(VAEWeightsError, match="wrong shape"):
        released.load_official_state_dict(tiny_state)


def test_meta_model_loads_with_assign(tiny_state, dec):
    with torch.device("meta"):
        model = VideoVAE(vae_config("golden"))
    model.load_official_state_dict(tiny_state, assign=True)
    torch.testing.assert_close(model.decode(dec["z_t4"]), dec["pixels_t4"], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("frames", [1, 4, 5])
def test_decode_matches_official(vae, dec, frames):
    out = vae.decode(dec[f"z_t{frames}"])
    assert out.shape == (1, 3, 1 + 4 * (frames - 1), 16, 32)
    torch.testing.assert_close(out, dec[f"pixels_t{frames}"], atol=ATOL, rtol=0)


def test_batched_decode_equals_per_sample(vae, dec):
    z = torch.cat([dec["z_t5"], dec["z_t5"].flip(-1)])
    out = vae.decode(z)
    torch.testing.assert_close(out[:1], dec["pixels_t5"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1:], vae.decode(z[1:]), atol=ATOL, rtol=0)


def test_chunk_plans():
    assert decoder_chunks(1) == [(0, 1, False)]
    assert decoder_chunks(2) == [(0, 2, True)]
    assert decoder_chunks(4) == [(0, 4, True)]
    assert decoder_chunks(5) == [(0, 3, False), (3, 5, False)]
    assert decoder_chunks(6) == [(0, 4, True), (4, 6, False)]
    plan = decoder_chunks(21)
    assert len(plan) == 10 and plan[0] == (0, 3, False) and plan[-1] == (19, 21, False)
    assert encoder_chunks(1, 4) == [(0, 1)]
    assert encoder_chunks(13, 4) == [(0, 13)]
    plan = encoder_chunks(81, 4)
    assert plan[0] == (0, 9) and len(plan) == 10 and plan[-1] == (73, 81)
    with pytest.raises(VAEInputError):
        decoder_chunks(0)


def test_chunked_decode_equals_one_pass(vae, dec):
    with torch.no_grad():
        one_pass = vae.decoder(vae.latent_to_vae(dec["z_t5"]), cache=None)
    torch.testing.assert_close(one_pass, vae.decode(dec["z_t5"]), atol=ATOL, rtol=0)


def test_two_latent_frames_decode(vae, dec):
    # Officially a crash; we decode 5 frames, equal to the start of the even-length video.
    out = vae.decode(dec["z_t4"][:, :, :2])
    assert out.shape == (1, 3, 5, 16, 32)
    torch.testing.assert_close(out, dec["pixels_t4"][:, :, :5], atol=ATOL, rtol=0)


def test_decode_frames_streams_uint8_chunks(vae, dec):
    chunks = list(vae.decode_frames(dec["z_t5"]))
    assert [c.shape for c in chunks] == [(9, 16, 32, 3), (8, 16, 32, 3)]
    assert all(c.dtype == torch.uint8 for c in chunks)
    expected = pixels_to_uint8(dec["pixels_t5"])[0]
    diff = (torch.cat(chunks).int() - expected.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01  # truncation edge cases only


def test_pixels_to_uint8_truncates_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]).view(1, 1, 1, 1, 6).expand(1, 3, 1, 1, 6)
    out = pixels_to_uint8(x)
    assert out.shape == (1, 1, 1, 6, 3)
    assert out[0, 0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]


def test_smooth_first_frame():
    frames = torch.arange(3 * 2 * 2 * 3, dtype=torch.uint8).view(3, 2, 2, 3)
    out = smooth_first_frame(frames)
    assert torch.equal(out[0], frames[1]) and torch.equal(out[1:], frames[1:])
    assert frames[0, 0, 0, 0] == 0  # input untouched
    single = frames[:1]
    assert torch.equal(smooth_first_frame(single), single)


def test_decode_rejects_bad_latents(vae):
    with pytest.raises(VAEInputError, match=r"latent must be \[B,64,T,h,w\]"):
        vae.decode(torch.zeros(1, 16, 1, 2, 2))
    with pytest.raises(VAEInputError, match="batch 1"):
        next(vae.decode_frames(torch.zeros(2, 64, 1, 1, 1)))


# ------------------------------------------------------------------------------- encoding

def test_encoder_matches_official(vae, enc):
    x = golden_image(enc)
    moments = vae.encode_moments(x)
    torch.testing.assert_close(moments, enc["enc_moments"], atol=ATOL, rtol=0)
    mean, std = gaussian_posterior(moments)
    torch.testing.assert_close(mean, enc["posterior_mean"], atol=ATOL, rtol=0)
    torch.testing.assert_close(std, enc["posterior_std"], atol=ATOL, rtol=0)
    torch.testing.assert_close(mean + std * enc["posterior_eps"], enc["posterior_sample"],
                               atol=ATOL, rtol=0)
    raw = vae.encode_raw_features(x, eps=enc["posterior_eps"])
    assert raw.shape == (1, 64, 1, 3, 4)
    torch.testing.assert_close(raw, enc["raw_features"], atol=ATOL, rtol=0)


def test_decode_of_encoded_image_matches_official(vae, enc):
    recon = vae.decode(enc["raw_features"]).clamp(-1, 1)
    torch.testing.assert_close(recon, enc["x_recon_raw_first_frame"], atol=ATOL, rtol=0)


def test_posterior_sampling_modes(vae, enc):
    x = golden_image(enc)
    mean_only = vae.encode_raw_features(x, sample=False)
    zero_eps = vae.encode_raw_features(x, eps=torch.zeros(1, 64, 1, 3, 4))
    torch.testing.assert_close(mean_only, zero_eps, atol=0, rtol=0)
    a = vae.encode_raw_features(x, generator=torch.Generator().manual_seed(7))
    b = vae.encode_raw_features(x, generator=torch.Generator().manual_seed(7))
    c = vae.encode_raw_features(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_chunked_encode_equals_one_pass(vae):
    x = torch.rand(1, 3, 17, 16, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    moments = vae.encode_moments(x)  # chunks of 9 + 8 frames
    assert moments.shape == (1, 128, 5, 1, 2)
    with torch.no_grad():
        one_pass = fold_2x2(vae.encoder(x, cache=None))
    torch.testing.assert_close(moments, one_pass, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 2, 16, 16), r"frame count must be 1 \+ 4k"),
    ((1, 3, 1, 24, 16), "multiples of 16"),
    ((1, 3, 16, 16), r"video must be \[B,3,T,H,W\]"),
    ((1, 4, 1, 16, 16), r"video must be \[B,3,T,H,W\]"),
])
def test_encode_rejects_bad_shapes(vae, shape, message):
    with pytest.raises(VAEInputError, match=message) as info:
        vae.encode_raw_features(torch.zeros(shape))
    assert isinstance(info.value, InfinistarError) and "\n" not in str(info.value)


def test_fold_roundtrip():
    x = torch.randn(2, 16, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    folded = fold_2x2(x)
    assert folded.shape == (2, 64, 3, 2, 3)
    assert torch.equal(folded[:, 4 * 5 + 2 * 1 + 0, :, 1, 2], x[:, 5, :, 3, 4])
    assert torch.equal(unfold_2x2(folded), x)


def test_sliced_convolutions_give_the_same_numbers(vae, dec, enc, monkeypatch):
    import engine.model.vae_blocks as blocks
    monkeypatch.setattr(blocks, "CONV_SLICE_ELEMENTS", 1)  # every conv call: one output frame
    torch.testing.assert_close(vae.decode(dec["z_t5"]), dec["pixels_t5"], atol=ATOL, rtol=0)
    raw = vae.encode_raw_features(golden_image(enc), eps=enc["posterior_eps"])
    torch.testing.assert_close(raw, enc["raw_features"], atol=ATOL, rtol=0)
