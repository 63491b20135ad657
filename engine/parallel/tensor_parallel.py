"""Tensor parallelism (`--parallel tensor`): each transformer block split across the ranks.

Every block is sharded with `torch.distributed.tensor.parallel.parallelize_module`, Megatron
style: q/k/v and gate/up are column-parallel (each rank computes its own query heads, K/V heads
and MLP columns), o and down are row-parallel (partial products summed by one all-reduce each), so
a block costs two all-reduces of the hidden states and no other communication. Heads never mix
before o_proj, so attention, QK-norm, RoPE and the K/V cache work per rank on local heads: the
cache is sharded by heads with them. Embeddings, final norm, heads, T5 and VAE are replicated (see
the README, "Several GPUs"); the blocks' outputs are all-reduced results, bit-identical on every
rank, so every rank computes the same probabilities and draws the same bits from its own
generator seeded alike: no broadcast of samples is needed.

Weights go straight from the memory-mapped safetensors into each rank's shard: the model is
built on the meta device, sharded there, given empty local storage, and every tensor is read as
the slice this rank owns (`safe_open(...).get_slice`), so no rank ever holds all the blocks.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from engine.checkpoints import weights
from engine.errors import InfinistarError
from engine.presets import Preset, TransformerConfig
from engine.model.state_keys import check_keys
from engine.model.transformer import InfinityTransformer

from engine.choices import PARALLEL_MODES
COLUMN = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
ROW = ("attn.o_proj", "mlp.down_proj")


class ParallelError(InfinistarError):
    """A tensor-parallel setup that cannot work (heads not divisible, unsupported mode)."""


def check_modes(parallel: str, offload_mode: str, weights_mode: str) -> None:
    if parallel not in PARALLEL_MODES:
        raise ParallelError(f"unknown parallel mode {parallel!r} (known: {', '.join(PARALLEL_MODES)})")
    if parallel == "tensor" and offload_mode != "none":
        raise ParallelError(f"--parallel tensor keeps each rank's shard on its GPU; it cannot be combined with --offload {offload_mode}")
    if parallel == "tensor" and weights_mode != "bf16":
        raise ParallelError(f"--parallel tensor loads the blocks in bf16; it cannot be combined with --weights {weights_mode}")


def valid_rank_counts(cfg: TransformerConfig) -> list[int]:
    """Numbers of ranks the model's heads and MLP split evenly over."""
    return [n for n in range(1, cfg.num_kv_heads + 1)
            if cfg.num_kv_heads % n == 0 and cfg.num_heads % n == 0 and cfg.mlp_hidden % n == 0]


def check_ranks(cfg: TransformerConfig, ranks: int) -> None:
    if ranks not in valid_rank_counts(cfg):
        counts = [str(n) for n in valid_rank_counts(cfg)]
        choice = counts[0] + " process" if len(counts) == 1 else ", ".join(counts[:-1]) + f" or {counts[-1]} processes"
        raise ParallelError(
            f"--parallel tensor over {ranks} ranks: the number of ranks must divide the model's "
            f"{cfg.num_kv_heads} K/V head{'s' if cfg.num_kv_heads != 1 else ''} (and {cfg.num_heads} query heads); "
            f"start {choice} (torchrun --nproc-per-node)")


def block_plan() -> dict:
    """parallelize_module plan of one block: column-wise in, row-wise out."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    return {**{name: ColwiseParallel() for name in COLUMN}, **{name: RowwiseParallel() for name in ROW}}


def shard_blocks(model: InfinityTransformer, mesh) -> None:
    """Split every block over `mesh` (1-D) in place; attention then counts its local heads."""
    from torch.distributed.tensor.parallel import parallelize_module

    ranks = mesh.size()
    check_ranks(model.config, ranks)
    for block in model.layers():
        parallelize_module(block, mesh, block_plan())
        block.attn.num_heads = model.config.num_heads // ranks
        block.attn.num_kv_heads = model.config.num_kv_heads // ranks


def _local_slice(reader, name: str, param: torch.Tensor) -> torch.Tensor:
    """The part of stored tensor `name` that this rank's `param` (a DTensor or plain) holds."""
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(param, DTensor) or not isinstance(param.placements[0], Shard):
        return reader.get_tensor(name)
    local = param.to_local()
    dim = param.placements[0].dim
    start = param.device_mesh.get_local_rank() * local.shape[dim]
    part = reader.get_slice(name)
    end = start + local.shape[dim]
    return part[start:end] if dim == 0 else part[:, start:end]


def local_tensor(param: torch.Tensor) -> torch.Tensor:
    """What this rank stores of `param`."""
    from torch.distributed.tensor import DTensor

    return param.to_local() if isinstance(param, DTensor) else param


def load_sharded_transformer(preset: Preset, folder: Path, device: torch.device) -> InfinityTransformer:
    """This rank's shard of the transformer (blocks split, the rest whole), read from `folder`."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    cfg = preset.transformer
    check_ranks(cfg, dist.get_world_size())
    with torch.device("meta"):
        model = InfinityTransformer(cfg).float()
    if device.type == "cuda":  # as released and as engine.checkpoints.loading: bf16 blocks, fp32 elsewhere
        for block in model.layers():
            block.to(torch.bfloat16)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    shard_blocks(model, mesh)
    model.to_empty(device=device)
    _fill(model, Path(folder))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def _fill(model: nn.Module, folder: Path) -> None:
    shards = weights.shard_map(folder)
    found: dict[str, tuple[int, ...]] = {}
    for file, names in shards.items():
        header = weights.read_safetensors_header(folder / file)
        found.update({name: header[name][1] for name in names if name in header})
    entries = dict(model.state_dict(keep_vars=True))
    check_keys({k: tuple(v.shape) for k, v in entries.items()}, found, True, f"Checkpoint {folder}")
    for file, names in shards.items():
        with weights.reading_safetensors(folder / file) as path, safe_open(str(path), framework="pt", device="cpu") as reader:
            for name in names:
                local_tensor(entries[name]).copy_(_local_slice(reader, name, entries[name]))


def block_parameter_bytes(model: InfinityTransformer) -> tuple[int, int, int]:
    """(bytes this rank stores of the blocks' parameters, bytes of the whole blocks, bytes every
    rank stores whole: the RMSNorm weights, 0.004 % of an 8B block, 0.3 % of a tiny one)."""
    from torch.distributed.tensor import DTensor

    params = [p for block in model.layers() for p in block.parameters()]
    local = sum(local_tensor(p).numel() * p.element_size() for p in params)
    replicated = sum(p.numel() * p.element_size() for p in params if not isinstance(p, DTensor))
    return local, sum(p.numel() * p.element_size() for p in params), replicated
