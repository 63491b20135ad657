"""The VAE phase: a plain autoencoder on single synthetic frames (L2 of the unquantized decode),
then every causal convolution's time taps moved onto the current frame, then the latent scale the
quantizer sees.

The VAE never trains through the quantizer. A quantized stage (reconstructing
`latent_from_bits(encode_bits(raw))` straight-through, plus the BSQ commitment) was the earlier
recipe; measured on the VAE's own reconstructions of rendered clips, it turned circles, squares
and triangles into round blobs (README, "The tiny model"). What the bits keep of the latent is
set instead by the schedule's repetitions and by `TrainConfig.latent_scale`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.model.schedule import build_schedule
from engine.model.vae import VideoVAE, fold_2x2, gaussian_posterior
from engine.model.vae_blocks import CausalConv3d
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


def autoencoder_loss(vae: VideoVAE, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """L2 between `pixels` [B, 3, T, H, W] and the decode of their unquantized latent."""
    return F.mse_loss(vae_decode_train(vae, vae_raw_features(vae, pixels, generator)), pixels)


def train_vae(preset: Preset, cfg: TrainConfig, log: Log = no_log, vae: VideoVAE | None = None,
              checkpoint: Callable[[VideoVAE], None] | None = None) -> VideoVAE:
    """The preset's VAE (fresh, or `vae` fine-tuned) trained as an autoencoder on `cfg.vae_batch`
    synthetic frames per step at the preset's size, its latent scale then set to `cfg.latent_scale`.

    Single frames only: the causal VAE's later latent frames reuse the spatial path, and clips
    made it worse (a moving object came out as a blurred blob, at every temporal compression tried).
    What single frames cannot train, how a frame mixes with the ones before it, `current_frame_only`
    then sets to "not at all".
    """
    torch.manual_seed(cfg.seed)
    height, width = build_schedule(preset, preset.frames[0]).pixel_size
    vae = (vae or VideoVAE(preset.vae)).train().requires_grad_(True)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * lr_at(step, cfg.vae_steps, cfg.warmup // 4)
        frames, _ = synthetic.batch(cfg.seed * 1_000_003 - step - 1, cfg.vae_batch, 1, height, width)
        loss = autoencoder_loss(vae, frames, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log("vae", step, {"loss": loss.item()})
        if checkpoint is not None and step % 100 == 99:
            checkpoint(vae)
    current_frame_only(vae)
    with torch.no_grad():
        vae.scale_learnable_parameters[0] = cfg.latent_scale
    return vae.eval().requires_grad_(False)


def current_frame_only(vae: VideoVAE) -> None:
    """Move each causal convolution's time taps onto the current frame (the earlier taps' weights
    added to it, the earlier taps zeroed), in place.

    On a single frame this changes nothing: the causal padding repeats frame 0, so every tap reads
    the same input. That is also why training on single frames never sets how the taps share the
    kernel: the split stays the random one of the initialisation, and on a clip the earlier taps
    mixed in where the object had been. Measured on the reconstructions of the 24 rendered clips,
    the centroid then moved 1-3 px over 17 frames against 15-28 px in the clips; with the taps moved
    it follows them (README, "The tiny model")."""
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, CausalConv3d) and module.time_pad > 0:
                weight = module.conv.weight  # [out, in, time, height, width]
                weight[:, :, -1] = weight.sum(dim=2)
                weight[:, :, :-1] = 0
