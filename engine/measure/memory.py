"""Analytic estimate of the peak GPU memory of one generation (`--dry-run`), loading nothing.

Everything is computed from the preset: parameter counts from the architecture (the VAE's by
building it on the meta device, which allocates nothing), the K/V cache peak from
`schedule.kv_cache_elements`, activations of the most expensive scale step from the shapes the
transformer code makes there, and the VAE decoder's activations from a per-pixel factor measured
on the CPU. The figures assume a CUDA GPU (bf16 blocks and K/V, fp32 embeddings/heads/VAE) and
SDPA flash or memory-efficient kernels (no L x L score matrix). They are estimates, not
measurements: see the README ("Running on a smaller GPU").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.checkpoints import offload
from engine.model import eight_bit
from engine.presets import Preset, TransformerConfig, VAEConfig
from engine.model.schedule import Schedule, build_schedule, kv_cache_elements

GIB = 2**30
# CUDA context, cuBLAS/cuDNN workspaces and allocator slack: a round allowance, not a measurement.
RUNTIME_OVERHEAD = 1 * GIB
# Peak decoder memory (activations and causal caches) per output pixel of one frame, fp32.
# Measured on the CPU as the peak RSS growth while decoding the released VAE's first chunk
# (9 frames, 64 MiB conv slices) at 64x64, 128x128 and 256x256 pixels: 147, 363 and 1142 MiB,
# i.e. 1850-2050 bytes per pixel and frame between sizes. That includes CPU-only copies (oneDNN
# reorders) and allocator slack; the analytic count of benchmarks/vae_decode_memory.py is 1200.
# Under CUDA autocast the convolutions run in bf16, so this should be an upper bound there.
VAE_DECODE_BYTES_PER_PIXEL_FRAME = 2100
VAE_FIRST_CHUNK_FRAMES = 9  # the decoder's largest chunk (3 latent frames -> 9 pixel frames)
BF16, FP32 = 2, 4
# Blocks with a GPU copy while streaming: the running one, the prefetched next one and the
# previous one until the GPU has finished with it.
STREAMED_BLOCKS_RESIDENT = 3

# Text encoders: (d_model, d_ff, layers, heads, d_kv, vocab) of the T5 encoders the presets use.
TEXT_ENCODERS = {"flan-t5-xl": (2048, 5120, 24, 32, 64, 32128), "tiny": (48, 64, 2, 4, 8, 259)}
TEXT_MAX_TOKENS = {"flan-t5-xl": 512, "tiny": 64}


def block_linear_shapes(cfg: TransformerConfig) -> list[tuple[int, int]]:
    """(out, in) of the linears of one block: q, k, v, o, gate, up, down."""
    c, dh = cfg.embed_dim, cfg.head_dim
    return [(cfg.num_heads * dh, c), (cfg.num_kv_heads * dh, c), (cfg.num_kv_heads * dh, c),
            (c, cfg.num_heads * dh), (cfg.mlp_hidden, c), (cfg.mlp_hidden, c), (c, cfg.mlp_hidden)]


def transformer_bytes(cfg: TransformerConfig, weights: str, ranks: int = 1) -> tuple[int, int]:
    """(bytes of one block, bytes of everything outside the blocks) on CUDA for a weights mode;
    with `ranks` > 1 (tensor parallel, bf16) one rank's share: its slice of every linear, whole norms."""
    eight_bit.check_mode(weights)
    shapes = block_linear_shapes(cfg)
    linear = sum(o * i for o, i in shapes)
    biases = sum(o for o, _ in shapes[:4]) if cfg.qkvo_bias else 0
    norms = 2 * cfg.embed_dim + 2 * cfg.head_dim
    if weights == "bf16":
        block = ((linear + biases) // ranks + norms) * BF16
    else:  # one byte per weight, an fp32 scale per output row; biases stay fp32
        block = linear + FP32 * sum(o for o, _ in shapes) + FP32 * biases + BF16 * norms
    c = cfg.embed_dim
    rest = (cfg.text_maxlen * cfg.text_channels + c + (cfg.text_channels + 1) * c + (cfg.vae_channels + 1) * c
            + c + (c + 1) * 2 * cfg.detail_bits + (c + 1) * 2 * cfg.semantic_bits)
    return block, rest * FP32


def text_encoder_params(name: str) -> int:
    """Parameters of a T5 encoder (embedding, blocks, relative position bias, final norm)."""
    d, ff, layers, heads, d_kv, vocab = TEXT_ENCODERS[name]
    per_layer = 4 * d * heads * d_kv + 3 * d * ff + 2 * d
    return vocab * d + layers * per_layer + 32 * heads + d


def vae_params(name: str | VAEConfig) -> int:
    import torch

    from engine.model.vae import VideoVAE, vae_config

    with torch.device("meta"):
        vae = VideoVAE(vae_config(name))
    return sum(p.numel() for p in vae.parameters())


def step_activation_bytes(cfg: TransformerConfig, tokens: int, context: int, batch: int,
                          masked: bool = False, ranks: int = 1) -> int:
    """Transient memory of one transformer step over `tokens` new tokens attending to `context`
    cached ones, following engine.model.transformer (rows chunked by BLOCK_CHUNK_ROWS). `masked`: a
    key mask (negative prompt of another length) makes the K/V heads repeated for SDPA. `ranks`:
    tensor parallel, each rank holding 1/ranks of the heads and MLP columns (hidden states whole)."""
    from engine.model.transformer import BLOCK_CHUNK_ROWS

    c, kv_width = cfg.embed_dim, 2 * cfg.num_kv_heads * cfg.head_dim // ranks
    rows = batch * tokens
    chunk = min(rows, BLOCK_CHUNK_ROWS)
    stream = 2 * rows * c * BF16  # a block's input and output
    kv = rows * kv_width * BF16 * (2 if context else 1)  # this step's K/V, plus the [past | new] copy
    kv += batch * context * kv_width * BF16 if context else 0
    if masked:
        kv += batch * (context + tokens) * kv_width * BF16 * cfg.num_heads // cfg.num_kv_heads
    # One row chunk: gate, up and their product (bf16), the fp32 norm and RoPE temporaries,
    # residual, normed input, attention output and projection (bf16).
    per_row = 3 * cfg.mlp_hidden // ranks * BF16 + 6 * c * FP32 + 4 * c * BF16
    logits = 4 * rows * 2 * cfg.detail_bits * FP32  # raw, scaled, guided, probabilities
    return stream + kv + chunk * per_row + logits


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by component and phase; `peak` includes RUNTIME_OVERHEAD."""

    preset: str
    frames: int
    offload: str
    weights: str
    pixel_size: tuple[int, int]
    ranks: int  # tensor-parallel ranks; the figures are per GPU
    steps: int
    largest_tokens: int
    transformer_weights: int
    block_weights: int
    text_encoder_weights: int
    vae_weights: int
    kv_cache: int
    sample_activations: int
    decode_activations: int
    text_activations: int
    phases: dict[str, int] = field(default_factory=dict)  # GPU bytes while encoding/sampling/decoding
    streamed_per_step: int = 0  # host-to-GPU bytes per transformer step (offload blocks)

    @property
    def peak(self) -> int:
        return max(self.phases.values()) + RUNTIME_OVERHEAD

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["pixel_size"] = list(self.pixel_size)
        data["peak"] = self.peak
        data["runtime_overhead"] = RUNTIME_OVERHEAD
        return data


def largest_step(schedule: Schedule, text_len: int) -> tuple[int, int]:
    """(tokens, attended context) of the step with the largest estimated activations."""
    def context(info) -> int:
        return text_len + sum(schedule.infos[r].tokens for r in info.ref_sids)
    info = max(schedule.infos, key=lambda i: (i.tokens, context(i)))
    return info.tokens, context(info)


def estimate(preset: Preset, frames: int, offload_mode: str = "none", weights: str = "bf16",
             guided: bool = True, negative_prompt: bool = False, ranks: int = 1) -> MemoryEstimate:
    """Peak GPU memory of generating `frames` frames (1 = image) with `preset` on a CUDA GPU;
    `negative_prompt` assumes it has another length than the prompt (a key mask). `ranks` > 1:
    per GPU with `--parallel tensor` over that many (engine.parallel.tensor_parallel: blocks and K/V cache split
    by heads; embeddings, heads, T5 and VAE whole on every GPU; offload none, bf16 only)."""
    offload.check_mode(offload_mode)
    if ranks > 1 and (offload_mode, weights) != ("none", "bf16"):
        raise ValueError("tensor parallel runs with --offload none --weights bf16 only")
    cfg = preset.transformer
    batch = 2 if guided else 1
    schedule = build_schedule(preset, frames)
    text_len = TEXT_MAX_TOKENS[preset.text_encoder]  # the longest prompt the encoder keeps
    block, rest = transformer_bytes(cfg, weights, ranks)
    transformer = rest + cfg.depth * block
    d, ff, layers, heads, _, _ = TEXT_ENCODERS[preset.text_encoder]
    text_weights = text_encoder_params(preset.text_encoder) * BF16
    # Prompt (and negative prompt) through T5: fp32 hidden states, gated FF, eager attention scores.
    text_act = batch * text_len * (6 * d + 3 * ff) * FP32 + batch * heads * text_len**2 * FP32
    vae = vae_params(preset.vae) * FP32
    kv = kv_cache_elements(schedule, cfg, "minimal", text_len=text_len, batch=batch) * BF16 // ranks
    tokens, context = largest_step(schedule, text_len)
    sample_act = step_activation_bytes(cfg, tokens, context, batch, masked=guided and negative_prompt, ranks=ranks)
    h, w = schedule.pixel_size
    latent = 2 * schedule.vae_channels * schedule.latent_frames * (h // 16) * (w // 16) * FP32
    decode_frames = min(frames, VAE_FIRST_CHUNK_FRAMES)
    decode_act = VAE_DECODE_BYTES_PER_PIXEL_FRAME * decode_frames * h * w + latent
    if offload_mode == "none":
        resident = transformer + text_weights + vae
        phases = {"encode": resident + text_act, "sample": resident + kv + sample_act,
                  "decode": resident + decode_act}
    elif offload_mode == "model":
        phases = {"encode": text_weights + text_act, "sample": transformer + kv + sample_act,
                  "decode": vae + decode_act}
    else:
        streamed = rest + STREAMED_BLOCKS_RESIDENT * block
        phases = {"encode": rest + text_weights + text_act, "sample": streamed + kv + sample_act,
                  "decode": rest + vae + decode_act}
    steps = sum(min(i.repetitions, preset.sampling.max_repeat_times) for i in schedule.infos)
    return MemoryEstimate(
        preset=preset.name, frames=frames, offload=offload_mode, weights=weights,
        pixel_size=schedule.pixel_size, ranks=ranks, steps=steps, largest_tokens=tokens,
        transformer_weights=transformer, block_weights=block, text_encoder_weights=text_weights,
        vae_weights=vae, kv_cache=kv, sample_activations=sample_act, decode_activations=decode_act,
        text_activations=text_act, phases=phases,
        streamed_per_step=cfg.depth * block if offload_mode == "blocks" else 0,
    )


def estimate_all(preset: Preset, frames: int, guided: bool = True,
                 negative_prompt: bool = False) -> dict[tuple[str, str], MemoryEstimate]:
    """`estimate` for every (offload, weights) combination."""
    return {(o, w): estimate(preset, frames, o, w, guided, negative_prompt)
            for o in offload.OFFLOAD_MODES for w in eight_bit.WEIGHT_MODES}
