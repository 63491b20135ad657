"""The one next-scale sampling loop (text-to-image, text-to-video, image-to-video, continuation).

Modes differ only in conditioning: how many leading scales are forced from encoded bits
(`forced_scales`) and which schedule is used. The engine never prints: progress goes to `on_step`.

Deliberate differences from the reference: the code accumulator is fp32 (the reference inherits
bf16 from the text prefix under autocast); a negative prompt of another length is masked instead
of attended as zero padding; only scales a later scale references are cached, and each is freed
after its last use; each clip accumulates at its own frame count (partial last clips work).
Visual conditions (the interactive mode's semantic/detail conditions, pipeline spec §5.6) are
`ConditionTokens`: latent grids run once after the text, attending only to themselves, cached
for the whole call and attended by every visual step next to the text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from engine.presets import SamplingConfig
from engine.model.latent_bits import LatentAccumulator
from engine.model.rope import grid_rope, text_rope, visual_rope
from engine.model.schedule import Schedule
from engine.model.transformer import InfinityTransformer, KVCache

TEXT_KEY = "text"


@dataclass(frozen=True)
class TextCondition:
    """Encoded prompt features [L, text_channels]; optional negative prompt features [Ln, text_channels].

    Without a negative prompt the unconditional branch uses the learned `cfg_uncond[:L]`.
    """

    features: torch.Tensor
    negative: torch.Tensor | None = None


@dataclass(frozen=True)
class ConditionTokens:
    """A latent grid every visual step attends to (e.g. the interactive semantic/detail condition).

    `codes` [1, vae_channels, t, h, w] are embedded like visual inputs; RoPE uses `frames` (one
    absolute latent-frame position per t) and scale-axis `rope_row` (800/801 in the reference).
    """

    key: str
    codes: torch.Tensor
    frames: tuple[int, ...]
    rope_row: int


@dataclass(frozen=True)
class StepEvent:
    """Progress of one transformer step (scale `scale`, repetition `repetition`)."""

    step: int  # 0-based over the whole schedule
    num_steps: int
    clip: int
    scale: int
    repetition: int
    shape: tuple[int, int, int]
    forced: bool


@dataclass
class StepTrace:
    """Debug record of one step: logits before temperature [bs, L, V] and P(bit = 1) [L*d]."""

    raw_logits: torch.Tensor
    p1: torch.Tensor


@dataclass
class SampleResult:
    latent: torch.Tensor  # [1, vae_channels, latent_frames, H, W] fp32
    bits: list[torch.Tensor] = field(default_factory=list)  # per executed step [1, t, h, w, d]
    trace: list[StepTrace] = field(default_factory=list)
    kv_cache_peak_bytes: int = 0  # largest size the K/V cache reached (measured after each step)


def apg_guidance(
    cond: torch.Tensor, uncond: torch.Tensor, scale: float, norm_threshold: float, eta: float = 0.0
) -> torch.Tensor:
    """Adaptive projected guidance over each sample's whole (L, V) logit block (pipeline spec §6.2)."""
    n, v = cond.shape[-2:]
    diff = cond - uncond
    if norm_threshold > 0:
        rms = (1 / math.sqrt(n * v)) * diff.norm(p=2, dim=(-2, -1), keepdim=True)
        diff = diff * torch.clamp(norm_threshold / rms, max=1.0)
    # The projection on the cond direction runs in fp64, as the reference does.
    unit = torch.nn.functional.normalize(cond.double(), dim=(-2, -1))
    parallel = (diff.double() * unit).sum(dim=(-2, -1), keepdim=True) * unit
    orthogonal = diff.double() - parallel
    update = orthogonal.to(cond.dtype) + eta * parallel.to(cond.dtype)
    return cond + (scale - 1) * update


def guide(logits: torch.Tensor, sampling: SamplingConfig, scale: float) -> torch.Tensor:
    """[bs, L, V] temperature-scaled logits -> [1, L, V] guided with `scale` (`sampling.cfg_at`);
    rows are (cond, uncond) when bs == 2."""
    if logits.shape[0] == 1:
        return logits
    cond, uncond = logits[:1], logits[1:]
    if sampling.guidance == "cfg":
        return scale * cond + (1 - scale) * uncond
    return apg_guidance(cond, uncond, scale, sampling.apg_norm_threshold, sampling.apg_eta)


def _text_prefix(
    model: InfinityTransformer, text: TextCondition, guided: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Projected prefix [bs, Lmax, C] and a key-validity mask [bs, Lmax] (None if no padding)."""
    rows = [text.features]
    if guided:
        if text.negative is not None:
            rows.append(text.negative)
        else:
            n = text.features.shape[0]
            if n > model.cfg_uncond.shape[0]:
                raise ValueError(f"prompt has {n} tokens, at most {model.cfg_uncond.shape[0]} are supported")
            rows.append(model.cfg_uncond[:n])
    lengths = [r.shape[0] for r in rows]
    width = max(lengths)
    feats = torch.zeros(len(rows), width, rows[0].shape[1], device=device, dtype=torch.float32)
    for i, r in enumerate(rows):
        feats[i, : r.shape[0]] = r.to(device=device, dtype=torch.float32)
    valid = None
    if min(lengths) != width:
        valid = torch.arange(width, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    return model.embed_text(feats), valid


def _key_mask(valid: torch.Tensor | None, before: int, after: int) -> torch.Tensor | None:
    """SDPA mask [bs, 1, 1, K] for keys [before | text | after]; None when every key is valid."""
    if valid is None:
        return None
    bs = valid.shape[0]
    ones = lambda k: torch.ones(bs, k, dtype=torch.bool, device=valid.device)  # noqa: E731
    return torch.cat([ones(before), valid, ones(after)], dim=1)[:, None, None, :]


@torch.no_grad()
def sample_latent(
    model: InfinityTransformer,
    schedule: Schedule,
    text: TextCondition,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
    forced_bits: Sequence[torch.Tensor] | None = None,
    forced_scales: int = 0,
    on_step: Callable[[StepEvent], None] | None = None,
    conditions: Sequence[ConditionTokens] = (),
    keep_bits: bool = False,
    trace: bool = False,
) -> SampleResult:
    """Sample the summed latent for `schedule`, conditioned on `text`.

    Scales with index < `forced_scales` take their bits from `forced_bits` (one tensor per
    step of the uncapped schedule, as `quantizer.encode_bits` returns them); their bits are still
    drawn first so the generator advances exactly like the reference. One `torch.multinomial`
    per step on the (L*d, 2) probability matrix: a generator seeded 41 reproduces the reference.
    """
    cfg = model.config
    device = model.word_embed.weight.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    if forced_scales > 0:
        needed = sum(i.repetitions for i in schedule.infos[:forced_scales])
        if forced_bits is None or len(forced_bits) < needed:
            raise ValueError(f"forcing {forced_scales} scales needs {needed} bit tensors")
    keys = [c.key for c in conditions]
    if len(set(keys)) != len(keys) or TEXT_KEY in keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"condition keys must be distinct strings other than {TEXT_KEY!r}")
    prefix, valid = _text_prefix(model, text, sampling.guided, device)
    bs, text_len = prefix.shape[:2]

    cache = KVCache(cfg.depth)
    model.forward_blocks(
        prefix, text_rope(text_len, cfg.head_dim, cfg.rope_base), cache, store=TEXT_KEY,
        attn_mask=_key_mask(valid, 0, 0),
    )
    for cond in conditions:
        tokens = model.embed_codes(cond.codes.to(device)).expand(bs, -1, -1)
        rope = grid_rope(tuple(cond.codes.shape[2:]), cond.frames, cond.rope_row, schedule.largest[1:],
                         cfg.head_dim, cfg.text_maxlen, cfg.rope_base)
        model.forward_blocks(tokens, rope, cache, store=cond.key)
    result = SampleResult(latent=torch.empty(0), kv_cache_peak_bytes=cache.num_bytes())
    cond_keys = tuple(keys)
    cond_tokens = sum(c.codes[0, 0].numel() for c in conditions)
    acc = LatentAccumulator(schedule, 1, device)
    x = model.embed_codes(acc.scale_input(0)).expand(bs, -1, -1)
    step = 0
    num_steps = sum(min(i.repetitions, sampling.max_repeat_times) for i in schedule.infos)
    for info in schedule.infos:
        n = min(info.repetitions, sampling.max_repeat_times)
        tau = sampling.tau_image if info.clip == 0 else sampling.tau_video
        scale = sampling.cfg_at(info.clip, info.is_semantic)
        attend = (*info.ref_sids, TEXT_KEY, *cond_keys)
        before = sum(schedule.infos[r].tokens for r in info.ref_sids)
        mask = _key_mask(valid, before, cond_tokens + info.tokens)
        for r in range(n):
            keep = r == n - 1 and info.last_use > info.index
            rope = visual_rope(schedule, info.index, r, cfg.head_dim, cfg.text_maxlen, cfg.rope_base)
            hidden = model.forward_blocks(x, rope, cache, attend, info.index if keep else None, mask)
            result.kv_cache_peak_bytes = max(result.kv_cache_peak_bytes, cache.num_bytes())
            raw = model.logits(hidden, info.is_semantic)
            probs = guide(raw.mul(1 / tau), sampling, scale).view(1, -1, 2).softmax(dim=-1)
            drawn = torch.multinomial(probs.view(-1, 2), num_samples=1, replacement=True, generator=generator)
            bits = drawn.view(1, *info.shape, info.bits).to(torch.uint8)
            forced = info.index < forced_scales
            if forced:
                bits = forced_bits[info.rope_rows[r]].to(device=device, dtype=torch.uint8).view_as(bits)
            acc.add_bits(info.index, bits)
            if r < n - 1:
                x = model.embed_codes(acc.scale_input(info.index)).expand(bs, -1, -1)
            if keep_bits:
                result.bits.append(bits)
            if trace:
                result.trace.append(StepTrace(raw_logits=raw, p1=probs[0, :, 1]))
            if on_step is not None:
                on_step(StepEvent(step, num_steps, info.clip, info.index, r, info.shape, forced))
            step += 1
        for ref in info.ref_sids:
            if schedule.infos[ref].last_use == info.index:
                cache.drop(ref)
        if info.index + 1 < len(schedule.infos):
            x = model.embed_codes(acc.scale_input(info.index + 1)).expand(bs, -1, -1)
    result.latent = acc.latent()
    return result
