"""A preset's full-size architecture with random weights: speed and memory figures without a download.

Components are built on the meta device and allocated once on the target device in the dtype the
real weights would get (transformer blocks bf16 on CUDA), so no fp32 detour or CPU copy is made.
The 8B presets' text encoder becomes a Flan-T5-XL-shaped encoder with a byte tokenizer.
"""
from __future__ import annotations

import torch

from engine.checkpoints.loading import Components
from engine.measure.costs import block_parameter_count, parameter_count
from engine.model.text_encoder import FLAN_T5_MAX_LENGTH, TextEncoder
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE, bit_mask
from engine.presets import Preset

# Flan-T5-XL encoder shape: the random-weight text encoder of the 8B presets.
T5_XL = dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32)
T5_XL_PARAMS = 1_223_527_424


def transformer_bytes(preset: Preset, bf16: bool) -> int:
    """Weight bytes as loaded: blocks bf16 and the rest fp32 on CUDA, all fp32 elsewhere."""
    total = parameter_count(preset.transformer)
    blocks = preset.transformer.depth * block_parameter_count(preset.transformer)
    return 2 * blocks + 4 * (total - blocks) if bf16 else 4 * total


def random_weight_bytes(preset: Preset, device: torch.device) -> int:
    """Memory the random-weight components take on `device` (transformer, VAE, text encoder)."""
    cuda = device.type == "cuda"
    text = T5_XL_PARAMS * (2 if cuda else 4) if preset.text_encoder == "flan-t5-xl" else 0
    vae = sum(p.numel() for p in _meta_vae(preset).parameters()) * 4
    return transformer_bytes(preset, bf16=cuda) + vae + text


def _meta_vae(preset: Preset) -> VideoVAE:
    with torch.device("meta"):
        return VideoVAE(preset.vae)


@torch.no_grad()
def _init_random(module: torch.nn.Module, generator: torch.Generator) -> None:
    """In-place init after `to_empty`: unit gains, zero biases, N(0, 1/fan_in) matrices.

    Values are kept small and finite on purpose: NaNs or denormals would change CPU speed.
    """
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim == 1 and leaf != "bias":
            p.fill_(1.0)
        elif leaf == "bias":
            p.zero_()
        else:
            p.normal_(0.0, p[0].numel() ** -0.5, generator=generator)


def random_components(preset: Preset, device: torch.device, seed: int = 0) -> Components:
    """The preset's full-size architecture with random weights, allocated once on `device` in the
    dtype the real weights would get (blocks bf16 on CUDA): no fp32 detour, no CPU copy."""
    cuda = device.type == "cuda"
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        transformer = InfinityTransformer(preset.transformer)
    if cuda:
        for block in transformer.layers():
            block.to(torch.bfloat16)
    transformer.to_empty(device=device)
    _init_random(transformer, generator)
    vae = _meta_vae(preset).to_empty(device=device)
    _init_random(vae, generator)
    for name, buffer in vae.named_buffers():
        buffer.copy_(bit_mask(buffer.numel()))
    if preset.text_encoder == "tiny":
        text = TextEncoder.tiny(seed=seed, device=device)
    else:
        text = random_t5_xl(device, generator)
    return Components(preset, transformer.eval().requires_grad_(False), vae.eval().requires_grad_(False), text,
                      device, "random weights")


def random_t5_xl(device: torch.device, generator: torch.Generator) -> TextEncoder:
    """A Flan-T5-XL-shaped encoder with random weights and a byte tokenizer (no download).

    Byte tokens make a prompt about 4x longer than T5's sentencepiece would: the measured text
    length is reported, and the text encoder is a small share of the time anyway.
    """
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    config = T5Config(**T5_XL, feed_forward_proj="gated-gelu")
    with torch.device("meta"):
        model = T5EncoderModel(config)
    model = model.to(torch.bfloat16 if device.type == "cuda" else torch.float32).to_empty(device=device)
    _init_random(model, generator)
    return TextEncoder(ByT5Tokenizer(extra_ids=0), model, FLAN_T5_MAX_LENGTH)
