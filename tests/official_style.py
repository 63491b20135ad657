"""A tiny module whose state-dict names follow the official InfinityStar transformer keys."""
from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Attention(nn.Module):
    def __init__(self, dim: int, kv_dim: int, head_dim: int):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.attn = Attention(dim, dim // 2, 4)
        self.mlp = MLP(dim, hidden)
        self.input_layernorm = RMSNorm(dim)
        self.post_attention_layernorm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layernorm(x)
        x = x + self.attn.o_proj(self.attn.q_proj(h))  # enough mixing to make every weight matter
        return x + self.mlp(self.post_attention_layernorm(x))


class Chunk(nn.Module):
    def __init__(self, blocks: int, dim: int, hidden: int):
        super().__init__()
        self.module = nn.ModuleList(Block(dim, hidden) for _ in range(blocks))


class TinyOfficial(nn.Module):
    def __init__(self, dim: int = 16, hidden: int = 32, chunks: int = 2, per_chunk: int = 2, text: int = 8):
        super().__init__()
        self.cfg_uncond = nn.Parameter(torch.randn(4, text))
        self.sos_token = nn.Parameter(torch.randn(1, 1, dim))
        self.text_proj = nn.Linear(text, dim)
        self.word_embed = nn.Linear(8, dim)
        self.block_chunks = nn.ModuleList(Chunk(per_chunk, dim, hidden) for _ in range(chunks))
        self.norm_hidden_sates = RMSNorm(dim)  # sic, as in the official keys
        self.head = nn.Linear(dim, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.word_embed(x) + self.text_proj(self.cfg_uncond).mean(0) + self.sos_token[0]
        for chunk in self.block_chunks:
            for block in chunk.module:
                h = block(h)
        return self.head(self.norm_hidden_sates(h))
