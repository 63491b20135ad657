"""Train a preset's VAE, transformer and (tiny) text encoder on the synthetic shape videos.

Written for any preset config, sized for the tiny one (CPU minutes). It uses the inference
modules and key names unchanged, and writes the official folder layout `engine.checkpoints.loading` reads:
`infinitystar_videovae.safetensors`, `<checkpoint_dir>/model.safetensors`,
`text_encoder/tiny.safetensors`.

Transformer objective (transformer spec §6): all scales of a video packed in one sequence, one
random repetition per scale, each fed what the sampler feeds it (the area-resized running sum
of earlier steps; zeros first), attention = `schedule.dense_visibility`, bitwise cross-entropy
on the `quantizer.encode_bits` labels, and text dropout to `cfg_uncond[:L]` so guidance works.
A scale that later scales attend to is always trained at its last repetition: that is the one
whose K/V the sampler caches.

    python -m engine.train --preset tiny --out /tmp/tiny-model --seed 0
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file, save_model

from engine import presets
from engine.train import synthetic
from engine.checkpoints.loading import TINY_TEXT_WEIGHTS, VAE_SAFETENSORS
from engine.presets import Preset
from engine.model.latent_bits import LatentAccumulator, encode_bits, latent_from_bits
from engine.model.rope import text_rope, visual_rope
from engine.model.schedule import Schedule, build_schedule, dense_visibility
from engine.model.text_encoder import TextEncoder, prompt_text
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE, fold_2x2, gaussian_posterior

Log = Callable[[str, int, dict], None]  # (phase, step, metrics)


def _no_log(phase: str, step: int, metrics: dict) -> None:
    pass


@dataclass(frozen=True)
class TrainConfig:
    """Steps, batch sizes and learning rates of both phases (defaults: the shipped tiny model)."""

    seed: int = 0
    vae_steps: int = 1500
    ae_steps: int = 300  # first VAE steps: single frames only, plain L2 autoencoder (no quantizer)
    vae_batch: int = 1
    vae_lr: float = 1e-3  # 2e-3 leaves the tiny VAE colour-blind (brightness only)
    commit_weight: float = 1.0
    fg_weight: float = 5.0  # loss weight of shape pixels relative to the black background
    vae_image_batch: int = 8  # extra single frames per VAE step: cheap colour/shape signal
    raw_weight: float = 0.5  # also decode those frames' unquantized latent (direct encoder signal)
    chroma_weight: float = 0.0  # extra L1 on the opponent colours R-G and R+G-2B
    videos: int = 800  # clips encoded once for the transformer phase
    steps: int = 3000
    batch: int = 24
    lr: float = 2e-3
    text_lr: float = 1e-3
    cond_drop: float = 0.1
    long_share: float = 0.25  # share of transformer steps on the preset's longest videos (extend)
    warmup: int = 100
    uncached_reps: int = 1  # 1: also train the earlier repetitions of cached scales (`uncached_reps`)

    def __post_init__(self) -> None:
        if self.vae_steps > self.ae_steps and not (self.vae_batch or self.vae_image_batch):
            raise ValueError("the quantized VAE steps need clips or frames: vae_batch or vae_image_batch > 0")


def _lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------- VAE


def vae_raw_features(vae: VideoVAE, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable `VideoVAE.encode_raw_features` (one encoder pass, posterior sampled)."""
    mean, std = gaussian_posterior(fold_2x2(vae.encoder(pixels, None)))
    z = mean + std * torch.randn(mean.shape, generator=generator)
    return F.linear(z.movedim(1, -1), vae.proj_down.weight, vae.proj_down.bias).movedim(-1, 1) \
        * vae.scale_learnable_parameters[0]


def vae_decode_train(vae: VideoVAE, latent: torch.Tensor) -> torch.Tensor:
    """Differentiable decode of an odd number of latent frames (one pass = the chunked decode)."""
    if latent.shape[2] % 2 == 0 and latent.shape[2] > 1:
        raise ValueError("training decodes odd latent frame counts only")
    return vae.decoder(vae.latent_to_vae(latent), None, False)


def vae_loss(vae: VideoVAE, pixels: torch.Tensor, schedule: Schedule, commit_weight: float,
             generator: torch.Generator | None = None, fg_weight: float = 5.0,
             raw_weight: float = 0.0, chroma_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Reconstruction of the *quantized* latent (straight-through) + BSQ commitment.

    The decoder only ever sees multi-scale quantized sums, as at inference; foreground pixels
    weigh `fg_weight` times more, so the small shapes are not drowned by the black background.
    `raw_weight` adds the reconstruction of the unquantized latent (a direct encoder signal);
    `chroma_weight` an L1 on the opponent colours R-G and R+G-2B (optional, off by default).
    """
    raw = vae_raw_features(vae, pixels, generator)
    quant = latent_from_bits(encode_bits(raw.detach(), schedule), schedule)
    latent = raw + (quant - raw).detach()
    recon = vae_decode_train(vae, latent)
    weight = 1 + (fg_weight - 1) * (pixels > -0.9).any(dim=1, keepdim=True).float()

    def rec_loss(recon: torch.Tensor) -> torch.Tensor:
        err = recon - pixels
        loss = (weight * err.abs()).mean() + (weight * err ** 2).mean()
        if chroma_weight:
            r, g, b = err.unbind(1)
            opponent = torch.stack([r - g, r + g - 2 * b], 1)
            loss = loss + chroma_weight * (weight * opponent.abs()).mean()
        return loss

    rec = rec_loss(recon)
    commit = F.mse_loss(raw, quant)
    loss = rec + commit_weight * commit
    if raw_weight:
        loss = loss + raw_weight * rec_loss(vae_decode_train(vae, raw))
    return loss, {"rec": rec.item(), "commit": commit.item()}


def train_vae(preset: Preset, cfg: TrainConfig, log: Log = _no_log, vae: VideoVAE | None = None,
              checkpoint: Callable[[VideoVAE], None] | None = None) -> VideoVAE:
    """The preset's VAE (fresh, or `vae` fine-tuned) trained on synthetic clips of the preset's size.

    First `ae_steps` steps: a plain L2 autoencoder on single frames (no quantizer), which gets
    shapes and brightness in place cheaply; then `vae_loss` on clips plus single frames. Colour
    comes last: red and green are mirror images in the palette, and the VAE separates them only
    after several hundred quantized steps (at lr 2e-3 it never did and drew both as yellow).
    """
    torch.manual_seed(cfg.seed)
    frames = preset.frames[0]
    schedule = build_schedule(preset, frames)
    height, width = schedule.pixel_size
    vae = (vae or VideoVAE(preset.vae)).train().requires_grad_(True)
    image_schedule = build_schedule(preset, 1)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * _lr_at(step, cfg.vae_steps, cfg.warmup // 4)
        loss, metrics = torch.zeros(()), {}
        if step < cfg.ae_steps:
            images, _ = synthetic.batch(cfg.seed * 1_000_003 - step - 1, max(cfg.vae_image_batch, 1), 1, height, width)
            loss = F.mse_loss(vae_decode_train(vae, vae_raw_features(vae, images, generator)), images)
            metrics["ae_rec"] = loss.item()
        else:
            if cfg.vae_batch:
                pixels, _ = synthetic.batch(cfg.seed * 1_000_003 + step, cfg.vae_batch, frames, height, width)
                loss, metrics = vae_loss(vae, pixels, schedule, cfg.commit_weight, generator, cfg.fg_weight,
                                         chroma_weight=cfg.chroma_weight)
            if cfg.vae_image_batch:
                images, _ = synthetic.batch(cfg.seed * 1_000_003 - step - 1, cfg.vae_image_batch, 1, height, width)
                image_loss, image_metrics = vae_loss(vae, images, image_schedule, cfg.commit_weight, generator,
                                                     cfg.fg_weight, cfg.raw_weight, cfg.chroma_weight)
                loss = loss + image_loss
                metrics["image_rec"] = image_metrics["rec"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log("vae", step, {"loss": loss.item(), **metrics})
        if checkpoint is not None and step % 100 == 99:
            checkpoint(vae)
    return vae.eval().requires_grad_(False)


# --------------------------------------------------------------------------------- transformer


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
    mask = packed_visibility(schedule, text.shape[1], extra).to(text.device)[None, None]
    if text_valid is not None:
        visual = tokens.shape[1] - text.shape[1]
        keys = torch.cat([torch.ones(text.shape[0], visual, dtype=torch.bool, device=text.device), text_valid], 1)
        mask = mask & keys[:, None, None, :]
    hidden = model.forward_blocks(tokens, rope, attn_mask=mask)
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
    """Encoded clips: the per-step bit labels (stacked over clips) and their decorated captions."""

    bits: list[torch.Tensor]  # per step [N, t, h, w, d] uint8
    prompts: list[str]


@torch.no_grad()
def encode_dataset(vae: VideoVAE, preset: Preset, count: int, seed: int, chunk: int = 16,
                   frames: int | None = None) -> Dataset:
    """`count` synthetic clips of `frames` frames (default: the preset's first length), encoded."""
    schedule = build_schedule(preset, frames or preset.frames[0])
    height, width = schedule.pixel_size
    seconds = (schedule.num_frames - 1) // preset.fps
    generator = torch.Generator().manual_seed(seed)
    steps: list[list[torch.Tensor]] = [[] for _ in range(schedule.num_steps)]
    prompts: list[str] = []
    for start in range(0, count, chunk):
        pixels, captions = synthetic.batch(seed * 7919 + start + 1, min(chunk, count - start),
                                           schedule.num_frames, height, width)
        raw = vae.encode_raw_features(pixels, generator)
        for i, b in enumerate(encode_bits(raw, schedule)):
            steps[i].append(b)
        prompts += [prompt_text(c, decoration=preset.decoration, seconds=seconds) for c in captions]
    return Dataset([torch.cat(s) for s in steps], prompts)


def transformer_step(model: InfinityTransformer, text: TextEncoder, schedule: Schedule, data: Dataset,
                     index: torch.Tensor, cond_drop: float, generator: torch.Generator | None = None,
                     train_uncached: bool = True) -> tuple[torch.Tensor, float]:
    """Loss and bit accuracy of one teacher-forced batch (clips `index` of `data`)."""
    feats, valid = encode_text_train(text, [data.prompts[i] for i in index.tolist()])
    feats = drop_text(model, feats, valid, cond_drop, generator)
    bits = [b[index] for b in data.bits]
    reps = random_reps(schedule, generator)
    extra = uncached_reps(schedule, generator) if train_uncached else ()
    logits = teacher_forced_logits(model, schedule, feats, valid, bits, reps, extra)
    return bit_loss(logits, bits, schedule, reps, extra)


def train_transformer(preset: Preset, vae: VideoVAE, cfg: TrainConfig, log: Log = _no_log,
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
    n = data.bits[0].shape[0]
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = group["base"] * _lr_at(step, cfg.steps, cfg.warmup)
        index = torch.randint(n, (cfg.batch,), generator=generator)
        if long is not None and float(torch.rand((), generator=generator)) < cfg.long_share:
            loss, acc = transformer_step(model, text, *long, index, cfg.cond_drop, generator, cfg.uncached_reps)
        else:
            loss, acc = transformer_step(model, text, schedule, data, index, cfg.cond_drop, generator,
                                         cfg.uncached_reps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(text.model.parameters()), 1.0)
        opt.step()
        log("transformer", step, {"loss": loss.item(), "bit_acc": acc})
    text.model.requires_grad_(False)
    return model.eval().requires_grad_(False), text


# ------------------------------------------------------------------------------------- saving


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unshared contiguous copies (safetensors refuses aliased tensors, e.g. the VAE's mask alias)."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def save_model_folder(folder: str | Path, preset: Preset, transformer: InfinityTransformer | None = None,
                      vae: VideoVAE | None = None, text: TextEncoder | None = None) -> Path:
    """Write the given parts in the official layout that `engine.checkpoints.loading.load_components` reads."""
    folder = Path(folder)
    if transformer is not None:
        (folder / preset.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        save_file(_plain(transformer.state_dict()), str(folder / preset.checkpoint_dir / "model.safetensors"),
                  metadata={"format": "pt"})
    if vae is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(_plain(vae.state_dict()), str(folder / VAE_SAFETENSORS), metadata={"format": "pt"})
    if text is not None:
        (folder / TINY_TEXT_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
        save_model(text.model, str(folder / TINY_TEXT_WEIGHTS))
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", required=True, help="model folder to write (official layout)")
    parser.add_argument("--phase", choices=("all", "vae", "transformer"), default="all",
                        help="'transformer' reuses the VAE already in --out")
    parser.add_argument("--resume-vae", type=Path, help="fine-tune the VAE of this model folder")
    parser.add_argument("--resume-transformer", type=Path,
                        help="fine-tune the transformer and tiny text encoder of this model folder")
    defaults = TrainConfig()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = TrainConfig(**{k: getattr(args, k) for k in vars(defaults)})
    except ValueError as error:
        parser.error(str(error))
    preset = presets.get(args.preset)
    start = time.perf_counter()

    def log(phase: str, step: int, metrics: dict) -> None:
        if step % 25 == 0:
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            logging.info("%s step %d %s (%.0f s)", phase, step, shown, time.perf_counter() - start)

    if args.phase in ("all", "vae"):
        from engine.checkpoints.loading import load_vae

        start_vae = load_vae(preset, args.resume_vae, torch.device("cpu")) if args.resume_vae else None
        vae = train_vae(preset, cfg, log, start_vae, lambda v: save_model_folder(args.out, preset, vae=v))
        save_model_folder(args.out, preset, vae=vae)
        logging.info("VAE done after %.0f s", time.perf_counter() - start)
    else:
        from engine.checkpoints.loading import load_vae

        vae = load_vae(preset, Path(args.out), torch.device("cpu"))
    if args.phase in ("all", "transformer"):
        start_model = start_text = None
        if args.resume_transformer:
            start_model = InfinityTransformer(preset.transformer)
            start_model.load_state_dict(load_file(str(args.resume_transformer / preset.checkpoint_dir / "model.safetensors")))
            start_text = TextEncoder.tiny(weights=args.resume_transformer / TINY_TEXT_WEIGHTS)
        model, text = train_transformer(preset, vae, cfg, log, start_text, start_model)
        save_model_folder(args.out, preset, transformer=model, text=text)
    logging.info("done after %.0f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
