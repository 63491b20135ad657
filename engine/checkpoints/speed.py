"""Speed options of a loaded model: the compute dtype (`--dtype`) and `torch.compile` (`--compile`).

dtype "auto" is the released behaviour and never changes the numbers: transformer blocks in bf16 on
CUDA (the VAE under bf16 autocast there), everything fp32 on the CPU and MPS. "bf16" on the CPU
puts the transformer blocks and the VAE in bf16 (oneDNN bf16 kernels: native on CPUs with
AVX512-BF16 or AMX, emulated and slower elsewhere); embeddings, heads and norms' arithmetic stay
fp32 as on CUDA. "fp32" keeps everything fp32, on CUDA too (the golden-parity dtype).

`--compile` compiles each transformer block on its own (regional compilation, dynamic shapes: one
graph serves every scale and every block), so the first steps pay the compile time once.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from engine.model import eight_bit
from engine.errors import InfinistarError, check_choice

from engine.choices import DTYPES
_FLOATS = {"fp32": torch.float32, "bf16": torch.bfloat16}


class DtypeError(InfinistarError):
    """An unknown or unusable --dtype."""


def check_dtype(name: str) -> str:
    return check_choice(name, DTYPES, DtypeError, "dtype")


def block_dtype(name: str, device: torch.device) -> torch.dtype:
    """The transformer blocks' dtype for `--dtype name` on `device`."""
    if check_dtype(name) == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name == "bf16" and device.type == "mps":
        raise DtypeError("--dtype bf16 is for CUDA and CPUs; use --dtype auto on MPS.")
    return _FLOATS[name]


def vae_dtype(name: str, device: torch.device) -> torch.dtype:
    """The VAE's weight dtype: bf16 only for an explicit bf16 on the CPU (CUDA autocasts instead)."""
    return torch.bfloat16 if check_dtype(name) == "bf16" and device.type == "cpu" else torch.float32


def uses_autocast(name: str, device: torch.device) -> bool:
    """Whether the pipeline runs under bf16 autocast (transformer, VAE): on CUDA, unless fp32 was
    asked for (then the text encoder is fp32 too)."""
    return device.type == "cuda" and check_dtype(name) != "fp32"


def compile_blocks(transformer: torch.nn.Module, backend: str = "inductor") -> None:
    """torch.compile every transformer block's two tensor steps (`keys_values`, `attend_and_mlp`)
    in place, with dynamic shapes; state-dict keys unchanged.

    Not the whole `Block.forward`: its Python around them (how many past K/V entries, how many row
    chunks, whether there is a mask) differs from scale to scale, and each difference compiled a new
    graph until dynamo's recompile limit (8) left the remaining scales uncompiled."""
    for block in transformer.layers():
        for step in ("keys_values", "attend_and_mlp"):
            setattr(block, step, torch.compile(getattr(block, step), dynamic=True, backend=backend))


def configure(components, dtype: str = "auto", weights: str = "bf16", compile: bool = False):
    """Apply speed options to already built fp32 components (random-weight benches); returns a
    copy of `components` recording them. Loading from files applies them in engine.checkpoints.loading."""
    device = components.device
    transformer, blocks = components.transformer, block_dtype(dtype, device)
    if eight_bit.check_mode(weights) != "bf16":
        eight_bit.quantize_transformer(transformer, weights, device, dtype=blocks)
    else:
        for block in transformer.layers():
            block.to(blocks)
    components.vae.to(vae_dtype(dtype, device))
    if compile:
        compile_blocks(transformer)
    return replace(components, weights=weights, dtype=dtype, compiled=compile)
