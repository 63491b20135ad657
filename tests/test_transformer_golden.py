"""Teacher-forced forward of the tiny model against the official code's outputs (fp32, CPU)."""

import pytest
import torch

from engine.model.rope import text_rope, visual_rope
from engine.model.schedule import build_schedule, dense_visibility
from golden_utils import GOLDEN_PRESET, golden, golden_meta, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("name,frames", [("tf_image", 1), ("tf_video", 17)])
def test_teacher_forced_forward(model, name, frames):
    g, meta = golden(name), golden_meta(name)
    schedule = build_schedule(GOLDEN_PRESET, frames)
    assert [list(s) for s in schedule.scales] == meta["scale_schedule"]
    # The training forward picks one repetition per scale; its RoPE row is the global step index.
    ropes = []
    for si, row in meta["rope_sid_real_sid"]:
        ropes.append(visual_rope(schedule, si, row - schedule.infos[si].rope_rows[0], 32))
    vis_rope = torch.cat(ropes, dim=1)
    assert torch.equal(vis_rope, g["visual_rope"].view(2, -1, 16))
    text_len, visual_len = meta["text_len"], meta["visual_len"]
    mask = dense_visibility(schedule, text_len)
    assert torch.equal(mask, g["attn_allowed"].bool())

    codes = g["x_BLC"].transpose(1, 2).reshape(1, 64, visual_len, 1, 1)
    x = torch.cat([model.embed_codes(codes), model.embed_text(g["text_kv"][None])], dim=1)
    rope = torch.cat([vis_rope, text_rope(text_len, 32)], dim=1)
    hidden = []
    with torch.no_grad():
        out = model.forward_blocks(x, rope, attn_mask=mask, hidden_states=hidden)
        for b in range(4):
            torch.testing.assert_close(hidden[b], g[f"hidden.{b}"], atol=1e-4, rtol=0)
        visual = out[:, :visual_len]
        torch.testing.assert_close(model.logits(visual, semantic=False), g["logits_detail"], atol=1e-4, rtol=0)
        torch.testing.assert_close(model.logits(visual, semantic=True), g["logits_semantic"], atol=1e-4, rtol=0)


def test_meta_construction_allocates_nothing():
    with torch.device("meta"):
        from engine.model.transformer import InfinityTransformer

        model = InfinityTransformer(GOLDEN_PRESET.transformer)
    assert all(p.is_meta for p in model.parameters())
    assert model.state_dict().keys() == golden("tiny_transformer").keys()


def test_single_chunk_uses_blocks_prefix():
    from dataclasses import replace

    from engine.model.transformer import InfinityTransformer

    with torch.device("meta"):
        model = InfinityTransformer(replace(GOLDEN_PRESET.transformer, block_chunks=1))
    assert "blocks.3.attn.q_proj.weight" in model.state_dict()
