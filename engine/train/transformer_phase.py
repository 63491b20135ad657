"""The transformer phase: the transformer and the tiny text encoder trained jointly on clips
encoded once by the trained VAE.

Transformer objective (transformer spec §6): all scales of a video packed in one sequence, one
random repetition per scale, each fed what the sampler feeds it (the area-resized running sum
of earlier steps; zeros first), attention = `schedule.dense_visibility`, bitwise cross-entropy
on the `quantizer.encode_bits` labels, and text dropout to `cfg_uncond[:L]` so guidance works.
A scale that later scales attend to is always trained at its last repetition: that is the one
whose K/V the sampler caches.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.model.latent_bits import LatentAccumulator, quantize_bits, resample_channels_space
from engine.model.rope import text_rope, visual_rope
from engine.model.schedule import Schedule, build_schedule
from engine.model.text_encoder import TextEncoder, prompt_text
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE
from engine.presets import Preset
from engine.train import synthetic
from engine.train.config import Log, TrainConfig, lr_at, no_log
from engine.train.packed_attention import forward_visible, packed_visibility


def init_transformer(model: InfinityTransformer, seed: int = 0) -> InfinityTransformer:
    """The official training init: Linear normal(0, 0.02) and zero bias, norms 1, cfg_uncond
    trunc-normal(std 1.2, ±2)/sqrt(Ct)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or name.startswith("norm_hidden"):
                torch.nn.init.ones_(p)
        torch.nn.init.trunc_normal_(model.cfg_uncond, std=1.2, a=-2, b=2)
        model.cfg_uncond.data /= math.sqrt(model.config.text_channels)
        torch.nn.init.zeros_(model.sos_token)
    return model


def random_reps(schedule: Schedule, generator: torch.Generator | None = None) -> list[int]:
    """One repetition per scale; scales a later scale attends to get their last one (cached)."""
    reps = []
    for info in schedule.infos:
        if info.last_use > info.index:
            reps.append(info.repetitions - 1)
        else:
            reps.append(int(torch.randint(info.repetitions, (), generator=generator)))
    return reps


def uncached_reps(schedule: Schedule, generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """(scale, repetition) for one random earlier repetition of every cached scale.

    `random_reps` must keep a cached scale at its last repetition (later scales attend to its
    K/V), so without these extra segments its earlier repetitions are never trained, yet the
    sampler runs them. In the tiny model that scale is the image's last one, the first scale on
    which the object becomes visible: its untrained first repetition left frame 0 empty or dim.
    """
    out = []
    for info in schedule.infos:
        if info.last_use > info.index and info.repetitions > 1:
            out.append((info.index, int(torch.randint(info.repetitions - 1, (), generator=generator))))
    return out


def step_index(schedule: Schedule, si: int, rep: int) -> int:
    """Position of step (scale si, repetition rep) in `encode_bits`' list."""
    return sum(i.repetitions for i in schedule.infos[:si]) + rep


def segments(schedule: Schedule, reps: Sequence[int], extra: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """(scale, repetition) of every packed segment: each scale at reps[si], then `extra`."""
    return [(info.index, reps[info.index]) for info in schedule.infos] + list(extra)


def scale_inputs(bits: Sequence[torch.Tensor], schedule: Schedule, reps: Sequence[int],
                 extra: Sequence[tuple[int, int]] = ()) -> list[torch.Tensor]:
    """Per segment (`segments`), what the sampler feeds step (si, rep): the running sum of every
    earlier step, area-resized to the scale (zeros for the first step)."""
    wanted = segments(schedule, reps, extra)
    found: dict[tuple[int, int], torch.Tensor] = {}
    acc = LatentAccumulator(schedule, bits[0].shape[0], bits[0].device)
    i = 0
    for info in schedule.infos:
        for r in range(info.repetitions):
            if (info.index, r) in wanted:
                found[info.index, r] = acc.scale_input(info.index).clone()
            acc.add_bits(info.index, bits[i])
            i += 1
    return [found[w] for w in wanted]


def teacher_forced_logits(model: InfinityTransformer, schedule: Schedule, text: torch.Tensor,
                          text_valid: torch.Tensor | None, bits: Sequence[torch.Tensor],
                          reps: Sequence[int], extra: Sequence[tuple[int, int]] = ()) -> list[torch.Tensor]:
    """One packed forward over [every scale at repetition reps[si] | extra (scale, rep) | text]
    -> logits per segment (`segments`).

    text [B, L, text_channels] (padded), text_valid [B, L] bool or None; bits: every step's
    labels as `encode_bits` returns them. Equals what the KV-cached sampler computes.
    """
    cfg = model.config
    wanted = segments(schedule, reps, extra)
    inputs = scale_inputs(bits, schedule, reps, extra)
    tokens = torch.cat([model.embed_codes(x) for x in inputs] + [model.embed_text(text)], dim=1)
    rope = torch.cat(
        [visual_rope(schedule, si, rep, cfg.head_dim, cfg.text_maxlen, cfg.rope_base) for si, rep in wanted]
        + [text_rope(text.shape[1], cfg.head_dim, cfg.rope_base)], dim=1)
    mask = packed_visibility(schedule, text.shape[1], extra).to(text.device)
    keys = None
    if text_valid is not None:
        visual = tokens.shape[1] - text.shape[1]
        keys = torch.cat([torch.ones(text.shape[0], visual, dtype=torch.bool, device=text.device), text_valid], 1)
    hidden = forward_visible(model, tokens, rope, mask, keys)
    out, start = [], 0
    for si, _ in wanted:
        info = schedule.infos[si]
        out.append(model.logits(hidden[:, start:start + info.tokens], info.is_semantic))
        start += info.tokens
    return out


def bit_loss(logits: Sequence[torch.Tensor], bits: Sequence[torch.Tensor], schedule: Schedule,
             reps: Sequence[int], extra: Sequence[tuple[int, int]] = ()) -> tuple[torch.Tensor, float]:
    """Bitwise cross-entropy, averaged per segment then over segments; also the bit accuracy."""
    losses, correct, total = [], 0, 0
    for (si, rep), lg in zip(segments(schedule, reps, extra), logits):
        label = bits[step_index(schedule, si, rep)].reshape(lg.shape[0], -1).long()
        lg = lg.reshape(lg.shape[0], -1, 2)
        losses.append(F.cross_entropy(lg.reshape(-1, 2), label.reshape(-1)))
        correct += (lg.argmax(-1) == label).sum().item()
        total += label.numel()
    return torch.stack(losses).mean(), correct / total


def encode_text_train(text: TextEncoder, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable `TextEncoder.encode`: padded features [B, Lmax, C] and validity [B, Lmax]."""
    ids, mask = text.tokenize(prompts)
    width = int(mask.sum(-1).max())
    hidden = text.model(input_ids=ids[:, :width], attention_mask=mask[:, :width]).last_hidden_state
    return hidden.float(), mask[:, :width].bool()


def drop_text(model: InfinityTransformer, feats: torch.Tensor, valid: torch.Tensor, rate: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each sample's features by `cfg_uncond[:L]` with probability `rate`."""
    drop = torch.rand(feats.shape[0], generator=generator) < rate
    if not drop.any():
        return feats
    uncond = model.cfg_uncond[: feats.shape[1]][None].to(feats.dtype)
    return torch.where(drop[:, None, None], uncond.expand_as(feats), feats) * valid[..., None]


@dataclass
class Dataset:
    """Encoded clips: their raw latents (quantized per batch, `corrected_bits`) and decorated captions."""

    raw: torch.Tensor  # [N, C, T, H, W] fp32
    prompts: list[str]


def corrected_bits(raw: torch.Tensor, schedule: Schedule, flip: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Bitwise self-correction (Infinity, §3.3): `encode_bits`' residual quantization of `raw`
    [B, C, T, H, W], except that each step's bits enter the running sum with every bit flipped with
    probability `flip` [B] (per clip). -> (fed, labels) per step: the flipped bits the later steps
    are fed, and the quantization of what is left, i.e. the bits that correct the earlier flips.
    Without `flip` both are `encode_bits(raw, schedule)`.

    The sampler draws its own bits (teacher-forced bit accuracy 0.94-0.96 on the detail scales),
    so a model trained only on clean sums meets inputs it never saw; in the tiny model that showed
    as an object fading out over the last frames.
    """
    acc = LatentAccumulator(schedule, raw.shape[0], raw.device)
    fed, labels = [], []
    for info in schedule.infos:
        target = raw[:, :, info.frame_ss : info.frame_ee]
        for _ in range(info.repetitions):
            small = resample_channels_space(target - acc.clips[info.clip], (info.bits, *info.shape[1:]), "area")
            bits = quantize_bits(small)
            labels.append(bits)
            if flip is not None:
                p = flip.view(-1, 1, 1, 1, 1).expand(bits.shape)
                bits = bits ^ (torch.rand(bits.shape, generator=generator) < p).to(torch.uint8)
            acc.add_bits(info.index, bits)
            fed.append(bits)
    return fed, labels


@torch.no_grad()
def encode_dataset(vae: VideoVAE, preset: Preset, count: int, seed: int, chunk: int = 16,
                   frames: int | None = None) -> Dataset:
    """`count` synthetic clips of `frames` frames (default: the preset's first length), encoded."""
    schedule = build_schedule(preset, frames or preset.frames[0])
    height, width = schedule.pixel_size
    seconds = (schedule.num_frames - 1) // preset.fps
    generator = torch.Generator().manual_seed(seed)
    raws: list[torch.Tensor] = []
    prompts: list[str] = []
    for start in range(0, count, chunk):
        pixels, captions = synthetic.batch(seed * 7919 + start + 1, min(chunk, count - start),
                                           schedule.num_frames, height, width)
        raws.append(vae.encode_raw_features(pixels, generator).float())
        prompts += [prompt_text(c, decoration=preset.decoration, seconds=seconds) for c in captions]
    return Dataset(torch.cat(raws), prompts)


def transformer_step(model: InfinityTransformer, text: TextEncoder, schedule: Schedule, data: Dataset,
                     index: torch.Tensor, cond_drop: float, generator: torch.Generator | None = None,
                     train_uncached: bool = True, max_flip: float = 0.0) -> tuple[torch.Tensor, float]:
    """Loss and bit accuracy of one teacher-forced batch (clips `index` of `data`), each clip's
    fed bits flipped with a probability drawn uniformly from [0, max_flip] (`corrected_bits`)."""
    feats, valid = encode_text_train(text, [data.prompts[i] for i in index.tolist()])
    feats = drop_text(model, feats, valid, cond_drop, generator)
    flip = torch.rand(len(index), generator=generator) * max_flip if max_flip else None
    fed, labels = corrected_bits(data.raw[index], schedule, flip, generator)
    reps = random_reps(schedule, generator)
    extra = uncached_reps(schedule, generator) if train_uncached else ()
    logits = teacher_forced_logits(model, schedule, feats, valid, fed, reps, extra)
    return bit_loss(logits, labels, schedule, reps, extra)


def train_transformer(preset: Preset, vae: VideoVAE, cfg: TrainConfig, log: Log = no_log,
                      text: TextEncoder | None = None, model: InfinityTransformer | None = None
                      ) -> tuple[InfinityTransformer, TextEncoder]:
    """A fresh (or the given) transformer and the tiny text encoder, trained jointly on encoded
    synthetic clips; `cfg.long_share` of the steps use the preset's longest videos."""
    schedule = build_schedule(preset, preset.frames[0])
    data = encode_dataset(vae, preset, cfg.videos, cfg.seed)
    long = None
    if cfg.long_share:
        frames = max(preset.frames)
        long = (build_schedule(preset, frames), encode_dataset(vae, preset, cfg.videos, cfg.seed + 1, frames=frames))
    model = (model or init_transformer(InfinityTransformer(preset.transformer), cfg.seed)).train().requires_grad_(True)
    text = text or TextEncoder.tiny(seed=cfg.seed)
    text.model.requires_grad_(True)  # eval mode kept: no T5 dropout
    opt = torch.optim.AdamW([
        {"params": list(model.parameters()), "lr": cfg.lr, "base": cfg.lr},
        {"params": list(text.model.parameters()), "lr": cfg.text_lr, "base": cfg.text_lr},
    ], weight_decay=0.0, betas=(0.9, 0.97))
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    n = data.raw.shape[0]
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = group["base"] * lr_at(step, cfg.steps, cfg.warmup)
        index = torch.randint(n, (cfg.batch,), generator=generator)
        if long is not None and float(torch.rand((), generator=generator)) < cfg.long_share:
            loss, acc = transformer_step(model, text, *long, index, cfg.cond_drop, generator, cfg.uncached_reps,
                                         cfg.max_flip)
        else:
            loss, acc = transformer_step(model, text, schedule, data, index, cfg.cond_drop, generator,
                                         cfg.uncached_reps, cfg.max_flip)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(text.model.parameters()), 1.0)
        opt.step()
        log("transformer", step, {"loss": loss.item(), "bit_acc": acc})
    text.model.requires_grad_(False)
    return model.eval().requires_grad_(False), text


