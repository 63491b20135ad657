"""--compile: the blocks' compiled steps sample the eager numbers, and every scale runs compiled."""

import pytest
import torch
from torch._dynamo.utils import counters

from engine.checkpoints import speed
from engine.generate.sampling import TextCondition, sample_latent
from engine.model import transformer as transformer_module
from engine.model.schedule import build_schedule
from golden_utils import GOLDEN_PRESET, GOLDEN_SAMPLING, golden, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compiled_blocks_sample_the_eager_video_and_never_fall_back(monkeypatch):
    # 8 rows per chunk at batch 2 (cond + uncond): the first scales run whole, the later ones in
    # row chunks, so both paths of Block.forward are compiled. A 3-token negative prompt against
    # the longer prompt makes the key mask path run too.
    monkeypatch.setattr(transformer_module, "BLOCK_CHUNK_ROWS", 16)
    feats = golden("infer_t2i_fp32attn")["text_kv"]
    text = TextCondition(feats, torch.randn(3, feats.shape[-1], generator=torch.Generator().manual_seed(1)))
    schedule = build_schedule(GOLDEN_PRESET, 17)
    model = tiny_model()

    def sample():
        return sample_latent(model, schedule, text, GOLDEN_SAMPLING, torch.Generator().manual_seed(3)).latent

    eager = sample()
    torch._dynamo.reset()
    counters.clear()
    speed.compile_blocks(model, backend="eager")
    try:
        compiled = sample()
    finally:
        torch._dynamo.reset()
    assert torch.equal(compiled, eager)
    # Every frame dynamo met was compiled: none gave up (recompile limit) and nothing broke the graph.
    assert counters["frames"]["total"] == counters["frames"]["ok"] > 0
    assert not counters["unimplemented"] and not counters["graph_break"]
