"""Attention over one packed teacher-forcing sequence [scales | extra segments | text].

The packed mask is block structured: every token of a segment sees the same keys (its own
segment, its scale's ref_sids and the text). `forward_visible` therefore attends segment by
segment to the visible keys only, instead of to all of them through a mask: the same result as
`InfinityTransformer.forward_blocks(..., attn_mask=mask)` (up to float summation order), at
the mask's density of the cost (0.3-0.5 for the tiny schedules).
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from engine.model.schedule import Schedule, dense_visibility
from engine.model.transformer import InfinityTransformer


def packed_visibility(schedule: Schedule, text_len: int, extra: Sequence[tuple[int, int]] = ()) -> torch.Tensor:
    """`schedule.dense_visibility` over [scales | extra segments | text]: an extra segment sees
    itself, the text and its scale's ref_sids, as the sampler's uncached repetition does; no
    other token sees it."""
    base = dense_visibility(schedule, text_len)
    if not extra:
        return base
    visual = base.shape[0] - text_len
    starts = [0]
    for info in schedule.infos:
        starts.append(starts[-1] + info.tokens)
    added = sum(schedule.infos[si].tokens for si, _ in extra)
    n = visual + added + text_len
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:visual, :visual] = base[:visual, :visual]
    mask[:visual, visual + added:] = base[:visual, visual:]
    mask[visual + added:, visual + added:] = base[visual:, visual:]
    pos = visual
    for si, _ in extra:
        info = schedule.infos[si]
        rows = slice(pos, pos + info.tokens)
        mask[rows, rows] = True
        mask[rows, visual + added:] = True
        for r in info.ref_sids:
            mask[rows, starts[r]:starts[r + 1]] = True
        pos += info.tokens
    return mask


def row_groups(mask: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """(start, end, visible key indices) for each run of identical rows of a bool [N, N] mask."""
    changes = (mask[1:] != mask[:-1]).any(-1).nonzero().flatten().add(1).tolist()
    bounds = [0, *changes, mask.shape[0]]
    return [(s, e, mask[s].nonzero().flatten()) for s, e in pairwise(bounds)]


def forward_visible(model: InfinityTransformer, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor,
                    key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Every block on x [bs, N, C], token i attending to the keys j with mask[i, j] (and
    key_valid[b, j] when given, e.g. text padding): `forward_blocks` with that mask, run per
    group of identical mask rows against its visible keys only."""
    groups = []
    for s, e, cols in row_groups(mask):
        valid = None
        if key_valid is not None:
            valid = key_valid[:, cols]
            valid = None if bool(valid.all()) else valid[:, None, None, :]
        groups.append((s, e, cols, valid))
    rope = rope.to(x.device)
    for block in model.layers():
        attn = block.attn
        normed = block.input_layernorm(x)
        k, v = attn.project_kv(normed, rope)
        out = [attn.attend(normed[:, s:e], rope[:, s:e], *attn.for_sdpa(k[:, :, cols], v[:, :, cols], valid), valid)
               for s, e, cols, valid in groups]
        h = x + torch.cat(out, dim=1)
        x = h + block.mlp(block.post_attention_layernorm(h))
    return x
