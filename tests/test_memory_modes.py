"""8-bit block weights, offloading and the KV-cache report, on CPU with the tiny model.

Tolerances for 8-bit weights were measured on the golden tiny transformer with teacher forcing
(fp32 reference logits: |max| 3.7, std 1.05; image / video sequence): int8 max |diff|
0.117 / 0.090, relative L2 0.019 / 0.020; fp8 max |diff| 0.370 / 0.374, relative L2 0.082 / 0.071.
The asserted bounds are about twice the larger figure. Since int8 on the CPU also quantizes the
activations (a real int8 GEMM, issue 16): max |diff| 0.166 / 0.117, relative L2 0.027 / 0.026.
"""
import pytest
import torch

from engine import presets
from engine.checkpoints import offload
from engine.model import eight_bit
from engine.checkpoints.loading import TINY_DIR, load_transformer
from engine.checkpoints.offload import BlockStreamer, HomeCopy, Offloader
from engine.generate.pipeline import load_pipeline
from engine.model.eight_bit import QuantLinear
from engine.request import GenerationRequest
from engine.model.rope import text_rope, visual_rope
from engine.model.schedule import build_schedule, dense_visibility, kv_cache_elements
from golden_utils import GOLDEN_PRESET, golden, golden_meta, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = {"int8": (0.25, 0.04), "fp8": (0.75, 0.16)}  # (max |diff|, relative L2)


def teacher_forced_logits(model, name="tf_video", frames=17):
    """Detail and semantic logits of the golden teacher-forced sequence, [1, L, 128 + 32]."""
    g, meta = golden(name), golden_meta(name)
    schedule = build_schedule(GOLDEN_PRESET, frames)
    ropes = [visual_rope(schedule, si, row - schedule.infos[si].rope_rows[0], 32)
             for si, row in meta["rope_sid_real_sid"]]
    rope = torch.cat([torch.cat(ropes, dim=1), text_rope(meta["text_len"], 32)], dim=1)
    codes = g["x_BLC"].transpose(1, 2).reshape(1, 64, meta["visual_len"], 1, 1)
    x = torch.cat([model.embed_codes(codes), model.embed_text(g["text_kv"][None])], dim=1)
    with torch.no_grad():
        out = model.forward_blocks(x, rope, attn_mask=dense_visibility(schedule, meta["text_len"]))
        visual = out[:, : meta["visual_len"]]
        return torch.cat([model.logits(visual, False), model.logits(visual, True)], dim=-1)


@pytest.fixture(scope="module")
def reference():
    return teacher_forced_logits(tiny_model())


GOLDEN_CASES = [("tf_image", 1), ("tf_video", 17)]


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_quantized_weights_round_trip(mode):
    w = torch.randn(6, 40) * torch.logspace(-3, 1, 6)[:, None]
    w[2] = 0  # an all-zero row must not divide by zero
    layer = torch.nn.Linear(40, 6, bias=True)
    layer.weight.data = w
    q = QuantLinear.from_linear(layer, mode)
    assert q.qweight.dtype == (torch.int8 if mode == "int8" else torch.uint8)
    restored = q.dequantized(torch.float32) * q.scale[:, None]
    err = (restored - w).abs()
    if mode == "int8":
        assert torch.all(err <= q.scale[:, None] / 2 + 1e-7)
    else:  # 3 mantissa bits: half an ulp is 1/16 of the value (subnormals: absolute 2^-10 x scale)
        assert torch.all(err <= w.abs() / 16 + q.scale[:, None] * 2.0**-10 + 1e-7)
    assert torch.all(restored[2] == 0)
    x = torch.randn(3, 40)
    expected = torch.nn.functional.linear(x, restored, layer.bias)
    if mode == "int8":  # on the CPU the activations are quantized per row too (a real int8 GEMM)
        step = x.abs().amax(1, keepdim=True) / 127
        expected = torch.nn.functional.linear((x / step).round() * step, restored, layer.bias)
    torch.testing.assert_close(q(x), expected)


@pytest.mark.parametrize("case", GOLDEN_CASES)
@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_quantized_logits_within_tolerance(mode, case):
    model = eight_bit.quantize_transformer(tiny_model(), mode, "cpu", torch.float32)
    assert not any(isinstance(m, torch.nn.Linear) for b in model.layers() for m in b.modules())
    assert model.block_dtype == torch.float32
    reference = teacher_forced_logits(tiny_model(), *case)
    diff = teacher_forced_logits(model, *case) - reference
    max_abs, rel = TOLERANCE[mode]
    assert diff.abs().max() < max_abs
    assert diff.norm() / reference.norm() < rel
    assert diff.abs().max() > 0  # really quantized


def test_quantized_load_matches_post_load_conversion():
    preset = presets.get("tiny")
    loaded = load_transformer(preset, TINY_DIR / preset.checkpoint_dir, torch.device("cpu"), "int8")
    # The shipped tiny weights (trained, not the golden ones), converted after a plain load.
    plain = load_transformer(preset, TINY_DIR / preset.checkpoint_dir, torch.device("cpu"))
    converted = eight_bit.quantize_transformer(plain, "int8", "cpu", torch.float32)
    assert isinstance(loaded.layers()[0].mlp.down_proj, QuantLinear)
    assert loaded.head.weight.dtype == torch.float32
    torch.testing.assert_close(teacher_forced_logits(loaded), teacher_forced_logits(converted), atol=0, rtol=0)


def test_row_chunked_blocks_match_one_pass(reference, monkeypatch):
    from engine.model import transformer

    monkeypatch.setattr(transformer, "BLOCK_CHUNK_ROWS", 7)
    # Same math; matmuls over fewer rows may round differently in the last bits.
    torch.testing.assert_close(teacher_forced_logits(tiny_model()), reference, atol=1e-5, rtol=0)


def test_block_streamer_installs_copies_only_while_a_block_runs(reference):
    model = tiny_model()
    blocks = model.layers()
    streamer = BlockStreamer(blocks, torch.device("cpu"))
    homes = [p for b in blocks for p in b.parameters()]
    seen = []
    hook = blocks[1].register_forward_pre_hook(lambda m, a: seen.append(m.attn.q_proj.weight))
    torch.testing.assert_close(teacher_forced_logits(model), reference, atol=0, rtol=0)
    # Block 1 ran on a copy; afterwards every block holds its home tensors again.
    assert seen and seen[0].data_ptr() != streamer.homes[1].home[0].data_ptr()
    assert [p.data_ptr() for b in blocks for p in b.parameters()] == [p.data_ptr() for p in homes]
    assert streamer.max_resident == 2  # the running block and the prefetched next one
    assert set(streamer.pending) == {0}  # block 0 is ready for the next forward
    streamer.remove()
    hook.remove()
    assert streamer.pending == {} and streamer.resident == 0
    torch.testing.assert_close(teacher_forced_logits(model), reference, atol=0, rtol=0)


def test_offloader_keeps_only_the_component_in_use():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    b.weight = a.weight  # a tied tensor is kept once
    both = torch.nn.Sequential(a, b)
    home = HomeCopy(both)
    assert len(home.home) == 3
    offloader = Offloader({"x": both, "y": torch.nn.Linear(2, 2)}, torch.device("cpu"))
    home_ptr = offloader.homes["x"].home[0].data_ptr()
    offloader.use("x")
    assert a.weight.data_ptr() != home_ptr and a.weight.data_ptr() == b.weight.data_ptr()
    offloader.use("y")
    assert a.weight.data_ptr() == home_ptr


def test_modes_are_no_ops_on_cpu_and_checked():
    cpu = torch.device("cpu")
    assert offload.home_device("blocks", cpu) == cpu
    assert offload.home_device("model", torch.device("cuda")) == cpu
    assert offload.attach("blocks", cpu, None, None, None) is None
    with pytest.raises(offload.OffloadModeError, match="none, model, blocks"):
        offload.check_mode("disk")
    with pytest.raises(eight_bit.WeightModeError, match="bf16, int8, fp8"):
        eight_bit.check_mode("int4")


@pytest.mark.parametrize("weights", eight_bit.WEIGHT_MODES)
@pytest.mark.parametrize("offload_mode", offload.OFFLOAD_MODES)
def test_tiny_pipeline_every_mode(offload_mode, weights):
    pipeline = load_pipeline("tiny", device="cpu", offload=offload_mode, weights=weights)
    result = pipeline.run(GenerationRequest(mode="t2v", prompt="a red fox", seed=3))
    assert result.frames.shape == (17, 48, 64, 3) and result.frames.dtype == torch.uint8
    meta = result.metadata
    assert (meta["offload"], meta["weights"], meta["dtype"]) == (offload_mode, weights, "float32")
    # The policy: text + the one referenced scale (clip 0's largest, 12 tokens), cond + uncond rows.
    preset = pipeline.preset
    text_len = pipeline.components.text.encode([meta["prompt_sent"]])[0].shape[0]
    schedule = build_schedule(preset, 17)
    expected = kv_cache_elements(schedule, preset.transformer, text_len=text_len, batch=2) * 4
    assert meta["kv_cache_peak_bytes"] == expected
    image = pipeline.run(GenerationRequest(mode="t2i", prompt="a red fox", seed=3))
    assert image.frames.shape == (1, 48, 64, 3)


def test_row_chunked_sampling_with_padded_negative_prompt(monkeypatch):
    """Key-validity masks (a negative prompt of another length) broadcast over row chunks."""
    from engine.model import transformer
    from engine.generate.sampling import TextCondition, sample_latent

    preset = GOLDEN_PRESET  # the golden weights, on their own schedule
    schedule = build_schedule(preset, 17)
    gen = torch.Generator().manual_seed(0)
    text = TextCondition(torch.randn(5, 48, generator=gen), torch.randn(3, 48, generator=gen))

    def run():
        return sample_latent(tiny_model(), schedule, text, preset.sampling,
                             torch.Generator().manual_seed(1), trace=True)

    whole = run()
    monkeypatch.setattr(transformer, "BLOCK_CHUNK_ROWS", 10)
    chunked = run()
    for a, b in zip(whole.trace, chunked.trace):
        torch.testing.assert_close(a.raw_logits, b.raw_logits, atol=1e-5, rtol=0)
    assert torch.equal(whole.latent, chunked.latent)


def test_repeated_kv_heads_equal_native_gqa():
    """The head order used when a mask rules out flash attention on CUDA matches enable_gqa."""
    from engine.model.transformer import repeat_kv_heads

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 5, 16, generator=gen)
    k, v = torch.randn(2, 2, 7, 16, generator=gen), torch.randn(2, 2, 7, 16, generator=gen)
    mask = torch.rand(2, 1, 1, 7, generator=gen) > 0.3
    mask[..., 0] = True
    native = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    keys, values = repeat_kv_heads(k, v, 8)
    assert keys.shape == (2, 8, 7, 16)
    torch.testing.assert_close(torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask),
                               native, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["model", "blocks"])
def test_offload_machinery_inside_the_pipeline(mode):
    """attach() does nothing on a CPU; build() runs the same code with CPU 'device copies'."""
    pipeline = load_pipeline("tiny", device="cpu", weights="int8")
    request = GenerationRequest(mode="t2v", prompt="a red fox", seed=3)
    plain = pipeline.run(request).frames
    c = pipeline.components
    c.offloader = offload.build(mode, c.device, c.transformer, c.text.model, c.vae)
    used = []
    hook = c.transformer.layers()[2].register_forward_pre_hook(
        lambda m, a: used.append(m.mlp.up_proj.qweight.data_ptr()))
    assert torch.equal(pipeline.run(request).frames, plain)
    hook.remove()
    assert c.offloader.in_use == "vae"
    # One forward for the text, one per step; each ran on a copy, and the home tensor is back.
    assert len(used) == 1 + build_schedule(pipeline.preset, 17).num_steps
    ptr = c.transformer.layers()[2].mlp.up_proj.qweight.data_ptr()
    homes = c.offloader.homes["transformer"] if mode == "model" else c.offloader.streamer.homes[2]
    assert ptr not in used and ptr in [t.data_ptr() for t in homes.home]
    if mode == "blocks":
        assert c.offloader.streamer.pending == {}  # the prefetched block 0 was dropped before decoding
