"""Analytic cost of a generation: tokens, FLOPs and KV-cache size, from the schedule and config only.

Nothing here allocates a model; `infinistar bench --dry-run` prints these numbers and a real
bench divides them by measured time. FLOPs count a multiply-add as 2 and cover the matrix
products only (Q/K/V/O projections, attention scores and values, SwiGLU MLP, embeddings and
heads); norms, RoPE, softmax and sampling are elementwise and left out, as MFU figures usually do.
The attention core is counted over every key a query sees (no causal halving: a scale attends to
all of its own tokens, its references and the text).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.presets import TransformerConfig
from engine.model.schedule import Schedule, kv_cache_elements


@dataclass(frozen=True)
class StepCost:
    """One transformer pass over one repetition of one scale, for the whole (cond+uncond) batch."""

    scale: int
    clip: int
    repetition: int
    query_tokens: int  # visual tokens of this scale (per batch row)
    key_tokens: int  # referenced scales + text + conditions + the scale itself
    projection_flops: int  # Q, K, V, O
    attention_flops: int  # QK^T and attention x V
    mlp_flops: int  # gate, up, down
    other_flops: int  # input embedding and logit head

    @property
    def flops(self) -> int:
        return self.projection_flops + self.attention_flops + self.mlp_flops + self.other_flops


@dataclass(frozen=True)
class GenerationCost:
    """All steps of one generation plus the text prefix pass."""

    steps: tuple[StepCost, ...]
    text_tokens: int
    batch: int  # 2 with guidance (cond + uncond rows), else 1
    prefix_flops: int  # text projection + every block over the text once
    kv_cache_elements: int  # peak cached K+V elements, all layers, whole batch

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def query_tokens(self) -> int:
        """Visual query tokens over all steps (repetitions counted, per batch row)."""
        return sum(s.query_tokens for s in self.steps)

    @property
    def key_tokens(self) -> int:
        """Sum over steps of query tokens x the keys each one sees (per batch row)."""
        return sum(s.query_tokens * s.key_tokens for s in self.steps)

    def total(self, part: str = "flops") -> int:
        """Sum of one StepCost field over every step ("flops" = all parts, prefix excluded)."""
        return sum(getattr(s, part) for s in self.steps)

    @property
    def flops(self) -> int:
        return self.total() + self.prefix_flops


def block_flops(config: TransformerConfig, queries: int, keys: int) -> tuple[int, int, int]:
    """(projections, attention core, MLP) FLOPs of ALL blocks for one batch row."""
    c, dh = config.embed_dim, config.head_dim
    q_width, kv_width = config.num_heads * dh, config.num_kv_heads * dh
    projections = 2 * queries * c * (2 * q_width + 2 * kv_width)
    attention = 2 * 2 * queries * keys * q_width  # scores and values, every query head
    mlp = 3 * 2 * queries * c * config.mlp_hidden
    return projections * config.depth, attention * config.depth, mlp * config.depth


def block_parameter_count(config: TransformerConfig) -> int:
    """Parameters of one transformer block (attention with QK norms, SwiGLU MLP, two norms)."""
    c, dh = config.embed_dim, config.head_dim
    q_width, kv_width = config.num_heads * dh, config.num_kv_heads * dh
    bias = q_width + 2 * kv_width + c if config.qkvo_bias else 0
    attention = c * (2 * q_width + 2 * kv_width) + bias + 2 * dh
    return attention + 3 * c * config.mlp_hidden + 2 * c


def parameter_count(config: TransformerConfig) -> int:
    """Parameters of the transformer as built by engine.model.transformer (checkpoint parity included)."""
    c = config.embed_dim
    outside = (
        config.text_maxlen * config.text_channels + c  # cfg_uncond, sos_token
        + (config.text_channels + 1) * c + (config.vae_channels + 1) * c  # text_proj, word_embed
        + c  # final norm
        + (c + 1) * 2 * config.detail_bits + (c + 1) * 2 * config.semantic_bits  # heads
    )
    return config.depth * block_parameter_count(config) + outside


def generation_cost(
    schedule: Schedule,
    config: TransformerConfig,
    text_tokens: int,
    guided: bool = True,
    condition_tokens: int = 0,
    max_repeat_times: int = 10000,
) -> GenerationCost:
    """The cost of `engine.generate.sampling.sample_latent` on `schedule` with a `text_tokens`-long prompt."""
    batch = 2 if guided else 1
    c = config.embed_dim
    steps = []
    for info in schedule.infos:
        queries = info.tokens
        keys = sum(schedule.infos[r].tokens for r in info.ref_sids) + text_tokens + condition_tokens + queries
        proj, attn, mlp = block_flops(config, queries, keys)
        # The input embedding runs once and is expanded to the batch; the head runs per row.
        other = 2 * queries * (config.vae_channels * c + batch * c * 2 * info.bits)
        for r in range(min(info.repetitions, max_repeat_times)):
            steps.append(StepCost(info.index, info.clip, r, queries, keys,
                                  batch * proj, batch * attn, batch * mlp, other))
    prefix = sum(block_flops(config, text_tokens, text_tokens)) + 2 * text_tokens * config.text_channels * c
    kv = kv_cache_elements(schedule, config, "minimal", text_tokens + condition_tokens, batch)
    return GenerationCost(tuple(steps), text_tokens, batch, batch * prefix, kv)
