"""The VAE phase: a plain autoencoder on single frames first, then reconstruction of the
multi-scale *quantized* latent (straight-through to the encoder) plus the BSQ commitment, on
synthetic clips and frames."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.model.latent_bits import encode_bits, latent_from_bits
from engine.model.schedule import Schedule, build_schedule
from engine.model.vae import VideoVAE, fold_2x2, gaussian_posterior
from engine.presets import Preset
from engine.train import synthetic
from engine.train.config import Log, TrainConfig, lr_at, no_log


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


def train_vae(preset: Preset, cfg: TrainConfig, log: Log = no_log, vae: VideoVAE | None = None,
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
            group["lr"] = cfg.vae_lr * lr_at(step, cfg.vae_steps, cfg.warmup // 4)
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


