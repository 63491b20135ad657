"""The InfinityStar transformer: Qwen3-style pre-norm blocks over [text prefix | visual tokens].

Module names are the official state-dict keys (`block_chunks.{c}.module.{j}.attn.q_proj`,
`norm_hidden_sates` sic, ...) so checkpoints load with `load_state_dict(strict=True)`.
Attention is SDPA; K/V of earlier sequences (text, referenced scales) live in an explicit KVCache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.presets import TransformerConfig
from engine.model.rope import apply_rope

# Rows (batch x tokens) a block processes at once. Everything in a block but the attention itself
# is per token, so a big scale (720p: 2 x 72000 rows) runs in row chunks after its K/V are made:
# the 4x-wide MLP temporaries and the fp32 norm/RoPE temporaries then exist for one chunk only.
BLOCK_CHUNK_ROWS = 8192


def _row_spans(n: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def repeat_kv_heads(keys: torch.Tensor, values: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[bs, Hkv, K, dh] -> [bs, num_heads, K, dh], query head h using K/V head h // (num_heads / Hkv)."""
    rep = num_heads // keys.shape[1]
    return keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32; the weight keeps its own dtype, the result takes the input's."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return y.to(x.dtype)


class KVCache:
    """Per-layer K/V entries keyed by sequence name ("text", scale index, ...).

    K is stored after RoPE, before GQA head repetition: [bs, Hkv, L, dh].
    """

    def __init__(self, num_layers: int) -> None:
        self.layers: list[dict[object, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in range(num_layers)]

    def store(self, layer: int, key: object, k: torch.Tensor, v: torch.Tensor) -> None:
        self.layers[layer][key] = (k, v)

    def get(self, layer: int, key: object) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layers[layer][key]

    def drop(self, key: object) -> None:
        for entries in self.layers:
            entries.pop(key, None)

    def keys(self) -> list[object]:
        return list(self.layers[0]) if self.layers else []

    def num_bytes(self) -> int:
        return sum(k.nbytes + v.nbytes for entries in self.layers for k, v in entries.values())


class Attention(nn.Module):
    """GQA self-attention with per-head QK RMSNorm and 4-axis RoPE."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        c, dh = cfg.embed_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, dh
        self.q_proj = nn.Linear(c, cfg.num_heads * dh, bias=cfg.qkvo_bias)
        self.k_proj = nn.Linear(c, cfg.num_kv_heads * dh, bias=cfg.qkvo_bias)
        self.v_proj = nn.Linear(c, cfg.num_kv_heads * dh, bias=cfg.qkvo_bias)
        self.o_proj = nn.Linear(cfg.num_heads * dh, c, bias=cfg.qkvo_bias)
        self.q_norm = RMSNorm(dh, cfg.norm_eps)
        self.k_norm = RMSNorm(dh, cfg.norm_eps)

    def project_kv(self, x: torch.Tensor, rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K (normed, rotated) and V of x [bs, L, C], each [bs, Hkv, L, dh]."""
        bs, n, _ = x.shape
        k = self.k_norm(self.k_proj(x).view(bs, n, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(bs, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(k, rope), v

    def attend(self, x: torch.Tensor, rope: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Queries of x [bs, L, C] against all `keys`/`values`; returns the o_proj output."""
        bs, n, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(bs, n, self.num_heads, self.head_dim)).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            apply_rope(q, rope), keys, values, attn_mask=attn_mask,
            enable_gqa=self.num_heads != self.num_kv_heads and not self._repeats_kv_heads(keys, attn_mask),
        )
        return self.o_proj(out.transpose(1, 2).reshape(bs, n, -1))

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        past: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [bs, L, C] attends to `past` K/V entries then itself. Returns (out, k, v) of x."""
        k, v = self.project_kv(x, rope)
        keys, values = self.for_sdpa(*_with_past(past, k, v), attn_mask)
        return self.attend(x, rope, keys, values, attn_mask), k, v

    def for_sdpa(self, keys: torch.Tensor, values: torch.Tensor,
                 attn_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """On CUDA the only fused kernel with native GQA (flash) takes no mask, and the
        memory-efficient one takes masks but no GQA: with a mask, repeat the K/V heads so SDPA
        does not fall back to the math kernel, which materialises every query-key score."""
        if not self._repeats_kv_heads(keys, attn_mask):
            return keys, values
        return repeat_kv_heads(keys, values, self.num_heads)

    def _repeats_kv_heads(self, keys: torch.Tensor, attn_mask: torch.Tensor | None) -> bool:
        """Whether `for_sdpa` repeats the K/V heads; decided without reading a shape, so that it
        stays a plain bool when compiled with dynamic shapes."""
        return attn_mask is not None and keys.is_cuda and self.num_heads != self.num_kv_heads


def _with_past(past: Sequence[tuple[torch.Tensor, torch.Tensor]], k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not past:
        return k, v
    return torch.cat([p[0] for p in past] + [k], dim=2), torch.cat([p[1] for p in past] + [v], dim=2)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.embed_dim, cfg.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.embed_dim, cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(.))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.embed_dim, cfg.norm_eps)

    def forward(self, x, rope, past=(), attn_mask=None):
        """x attends to `past` and itself; returns (out, k, v of x). A big input (more rows than
        BLOCK_CHUNK_ROWS) makes the K/V of every row first, then runs each row chunk on its own."""
        bs, n, _ = x.shape
        spans = _row_spans(n, max(1, BLOCK_CHUNK_ROWS // bs))
        if len(spans) == 1:
            k, v = self.keys_values(x, rope)
        else:
            parts = [self.keys_values(x[:, s:e], rope[:, s:e]) for s, e in spans]
            k, v = torch.cat([p[0] for p in parts], dim=2), torch.cat([p[1] for p in parts], dim=2)
            del parts
        keys, values = self.attn.for_sdpa(*_with_past(past, k, v), attn_mask)
        if len(spans) == 1:
            return self.attend_and_mlp(x, rope, keys, values, attn_mask), k, v
        per_query = attn_mask is not None and attn_mask.dim() >= 2 and attn_mask.shape[-2] == n
        out = x.new_empty(x.shape)
        for s, e in spans:
            mask = attn_mask[..., s:e, :] if per_query else attn_mask
            out[:, s:e] = self.attend_and_mlp(x[:, s:e], rope[:, s:e], keys, values, mask)
        return out, k, v

    # The two steps below take and return plain tensors, with no Python branching on shapes:
    # they are what `engine.checkpoints.speed.compile_blocks` compiles.

    def keys_values(self, x: torch.Tensor, rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K (normed, rotated) and V of rows x [bs, L, C]."""
        return self.attn.project_kv(self.input_layernorm(x), rope)

    def attend_and_mlp(self, x: torch.Tensor, rope: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Rows x [bs, L, C] attend to keys/values, then the MLP; both residuals added."""
        h = x + self.attn.attend(self.input_layernorm(x), rope, keys, values, attn_mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class BlockChunk(nn.Module):
    """Only exists so keys read `block_chunks.{c}.module.{j}` like the official checkpoints."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.module = nn.ModuleList(blocks)


class InfinityTransformer(nn.Module):
    """Text-prefix + next-scale visual transformer (official `Infinity`, arch 'qwen')."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        c = config.embed_dim
        self.config = config
        self.cfg_uncond = nn.Parameter(torch.empty(config.text_maxlen, config.text_channels))
        self.sos_token = nn.Parameter(torch.empty(1, 1, c))  # unused, kept for checkpoint parity
        self.text_proj = nn.Linear(config.text_channels, c)
        self.word_embed = nn.Linear(config.vae_channels, c)
        self.norm_hidden_sates = RMSNorm(c, config.norm_eps)
        self.head = nn.Linear(c, 2 * config.detail_bits)
        self.semantic_head2 = nn.Linear(c, 2 * config.semantic_bits)
        blocks = [Block(config) for _ in range(config.depth)]
        if config.block_chunks == 1:
            self.blocks = nn.ModuleList(blocks)
        else:
            n = config.depth // config.block_chunks
            self.block_chunks = nn.ModuleList(BlockChunk(blocks[i : i + n]) for i in range(0, config.depth, n))

    def layers(self) -> list[Block]:
        """All blocks in execution order."""
        if self.config.block_chunks == 1:
            return list(self.blocks)
        return [b for chunk in self.block_chunks for b in chunk.module]

    @property
    def block_dtype(self) -> torch.dtype:
        # Read from a norm: the linears may hold 8-bit weights (engine.model.eight_bit).
        return self.layers()[0].input_layernorm.weight.dtype

    def to_inference_dtype(self, device: torch.device | str) -> InfinityTransformer:
        """fp32 on CPU; on CUDA the blocks in bf16 and embeddings/norm/heads in fp32 (as released).

        The reference also rounds q/k/v to bf16 for flash-attn; with bf16 blocks SDPA sees bf16 q/k/v too.
        """
        device = torch.device(device)
        self.to(device=device, dtype=torch.float32)
        if device.type == "cuda":
            for block in self.layers():
                block.to(torch.bfloat16)
        return self.eval().requires_grad_(False)

    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        """[bs, L, text_channels] -> [bs, L, C] in the block dtype."""
        return self.text_proj(features.to(self.text_proj.weight.dtype)).to(self.block_dtype)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent codes [B, vae_channels, t, h, w] -> tokens [B, t*h*w, C] (t-major, then h, w)."""
        tokens = codes.flatten(2).transpose(1, 2).to(self.word_embed.weight.dtype)
        return self.word_embed(tokens).to(self.block_dtype)

    def logits(self, hidden: torch.Tensor, semantic: bool) -> torch.Tensor:
        """Final norm (result in the stream dtype, as the reference) then the fp32 head, in row
        chunks like the blocks (the norm's fp32 temporaries are 4x the bf16 hidden states)."""
        head = self.semantic_head2 if semantic else self.head
        bs, n, _ = hidden.shape
        spans = _row_spans(n, max(1, BLOCK_CHUNK_ROWS // bs))
        parts = [head(self.norm_hidden_sates(hidden[:, s:e]).float()) for s, e in spans]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward_blocks(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        cache: KVCache | None = None,
        attend: Sequence[object] = (),
        store: object | None = None,
        attn_mask: torch.Tensor | None = None,
        hidden_states: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run every block on x [bs, L, C].

        The tokens attend to the cached entries named in `attend` (in that order) and to themselves;
        their K/V are stored under `store` when given. `attn_mask` (bool, True = visible) must cover
        [attended entries | x]. Each block's output is appended to `hidden_states` when given.
        """
        rope = rope.to(x.device)
        for i, block in enumerate(self.layers()):
            past = [cache.get(i, key) for key in attend] if cache is not None else []
            x, k, v = block(x, rope, past, attn_mask)
            if store is not None and cache is not None:
                cache.store(i, store, k, v)
            if hidden_states is not None:
                hidden_states.append(x)
        return x
