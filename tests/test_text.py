"""Prompt decoration strings and the tiny T5 text encoder."""
import pytest
import torch

from engine import presets
from engine.presets import RELEASED_STYLE_SUFFIX, PromptDecoration
from engine.model.text_encoder import TextEncoder, decorate_prompt, prompt_text


def _decoration(name: str) -> PromptDecoration:
    return presets.get(name).decoration


def test_decoration_matches_the_official_scripts():
    suffix = ", Close-up on big objects, emphasize scale and detail"
    assert RELEASED_STYLE_SUFFIX == suffix
    for name, seconds in (("720p", 5), ("480p", 10)):
        assert prompt_text("a fox", decoration=_decoration(name), seconds=seconds) == f"<<<t={seconds}s>>>a fox{suffix}"
    assert prompt_text("a fox", decoration=_decoration("interact"), seconds=5) == "<<<t=5s>>>a fox"
    assert prompt_text("a", decoration=_decoration("tiny"), seconds=2) == "<<<t=2s>>>a"
    # Images: no tag; a decorated image prompt gets only the suffix.
    assert prompt_text("a fox", decoration=_decoration("720p"), seconds=None) == f"a fox{suffix}"
    assert decorate_prompt("a", seconds=None) == "a"
    assert prompt_text("a", decoration=_decoration("720p"), seconds=5, decorate=False) == "a"
    no_tag = PromptDecoration(duration_tag=False, suffix="!")
    assert prompt_text("a", decoration=no_tag, seconds=5) == "a!"


@pytest.fixture(scope="module")
def tiny():
    return TextEncoder.tiny(seed=0)


def test_tiny_tokenizer_is_bytes_plus_three(tiny):
    assert len(tiny.tokenizer) == 259 and tiny.channels == 48 and tiny.max_length == 64
    ids, mask = tiny.tokenize(["hé", "x" * 100])
    assert ids.shape == mask.shape == (2, 64)
    assert ids[0, :4].tolist() == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3, 1]  # UTF-8 bytes, then </s>
    assert ids[0, 4:].eq(0).all() and mask[0].tolist() == [1] * 4 + [0] * 60
    assert mask[1].all() and ids[1, -1] == 1  # truncated, still closed by </s>


def test_tiny_features_shapes_and_trimming(tiny):
    features = tiny.encode(["a cat", "", "x" * 100])
    assert [tuple(f.shape) for f in features] == [(6, 48), (1, 48), (64, 48)]
    assert all(f.dtype == torch.float32 for f in features)
    alone = tiny.encode(["a cat"])[0]
    # Padding is masked out; alone the prompt runs over 6 positions, in the batch over 64: other
    # GEMM shapes, so the same sums in another order (float rounding only).
    torch.testing.assert_close(alone, features[0], rtol=1e-5, atol=1e-6)


def test_tiny_is_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    again = TextEncoder.tiny(seed=0).encode(["a dog"])[0]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(again, tiny.encode(["a dog"])[0])
    assert not torch.allclose(TextEncoder.tiny(seed=1).encode(["a dog"])[0], again)


def test_trained_weights_replace_the_random_init(tmp_path, tiny):
    from safetensors.torch import save_model

    save_model(TextEncoder.tiny(seed=3).model, str(tmp_path / "t5.safetensors"))
    loaded = TextEncoder.tiny(seed=0, weights=tmp_path / "t5.safetensors")
    assert torch.equal(loaded.encode(["x"])[0], TextEncoder.tiny(seed=3).encode(["x"])[0])


def test_from_pretrained_folder_round_trip(tmp_path, tiny):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = TextEncoder.from_pretrained(tmp_path, device="cpu")
    assert loaded.max_length == 512 and loaded.model.dtype == torch.float32
    ids, mask = loaded.tokenize(["a cat"])
    assert ids.shape == (1, 512) and int(mask.sum()) == 6
    torch.testing.assert_close(loaded.encode(["a cat"])[0], tiny.encode(["a cat"])[0], rtol=0, atol=1e-5)


def test_encoding_only_the_real_tokens_gives_the_padded_run_features(tiny):
    """encode() skips the padding positions; the padded run (the official one) has the same features."""
    prompts = ["a red fox running through snow", "x" * 70, ""]
    for encoder in (tiny, TextEncoder(tiny.tokenizer, tiny.model, 512)):
        ids, mask = encoder.tokenize(prompts)
        with torch.no_grad():
            padded = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
        for features, row, n in zip(encoder.encode(prompts), padded, mask.sum(-1)):
            assert features.shape[0] == n
            torch.testing.assert_close(features, row[:n], rtol=1e-5, atol=1e-6)
