"""Multi-scale BSQ encode / accumulate against the official video_encode and sampler outputs."""

import pytest
import torch

from engine.model.latent_bits import bits_to_codes, encode_bits, latent_from_bits, resample_channels_space
from engine.model.schedule import build_schedule
from golden_utils import GOLDEN_PRESET, golden, golden_meta

pytestmark = pytest.mark.usefixtures("one_thread")


def test_encode_image_bits_exact():
    g = golden("vae_encode_image")
    bits = encode_bits(g["raw_features"], build_schedule(GOLDEN_PRESET, 1))
    assert len(bits) == 8
    for i, b in enumerate(bits):
        assert b.dtype == torch.uint8 and torch.equal(b, g[f"bits.{i:02d}"])


@pytest.mark.parametrize("name,frames", [("tf_image", 1), ("tf_video", 17)])
def test_encode_matches_teacher_forcing_labels(name, frames):
    """The training path records one repetition per scale; ours records all, in step order."""
    g, meta = golden(name), golden_meta(name)
    bits = encode_bits(g["raw_features"], build_schedule(GOLDEN_PRESET, frames))
    for si, row in meta["rope_sid_real_sid"]:
        assert torch.equal(bits[row].flatten(1, 3), g[f"gt_bits.{si:02d}"])


def test_bits_to_latent_matches_sampler_sum():
    g = golden("infer_t2i_fp32attn")
    latent = latent_from_bits([g[f"bits.{i:02d}"] for i in range(8)], build_schedule(GOLDEN_PRESET, 1))
    assert torch.equal(latent, g["summed_codes"])


def test_code_values_and_channel_interpolation():
    bits = torch.tensor([[[[[1, 0] * 8]]]], dtype=torch.uint8)
    codes = bits_to_codes(bits)
    assert codes.shape == (1, 16, 1, 1, 1) and set(codes.flatten().tolist()) == {0.25, -0.25}
    up = resample_channels_space(torch.arange(16.0).view(1, 16, 1, 1, 1), (64, 1, 1), "trilinear").flatten()
    assert up[:4].tolist() == [0.0, 0.0, 0.125, 0.375] and up[-2:].tolist() == [15.0, 15.0]
    down = resample_channels_space(torch.arange(64.0).view(1, 64, 1, 1, 1), (16, 1, 1), "area").flatten()
    assert down[:2].tolist() == [1.5, 5.5]


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        encode_bits(torch.zeros(1, 64, 2, 3, 4), build_schedule(GOLDEN_PRESET, 1))
