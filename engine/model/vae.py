"""InfinityStar video VAE: causal 3D-conv encoder/decoder around a 64-channel latent (spec/vae.md).

Geometry (released config): pixels [B,3,1+4k,H,W] in [-1,1] <-> latent [B,64,1+k,H/16,W/16].
The encoder halves space three times and time twice (causally, frame 0 kept), then a fixed 2x2
fold turns its 16-channel mean into 64 channels, mapped by `proj_down` and scaled by
`scale_learnable_parameters[0]`. The decoder undoes this and decodes in temporal chunks with
causal conv caches, so only one chunk's activations are alive at a time.

The multi-scale bit quantizer is not here (engine/quantizer.py); this module only carries the
quantizer's two `mask` buffers so the official state dict loads strictly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import VAEInputError, VAEWeightsError
from engine.presets import VAE_CONFIGS, VAEConfig
from engine.model.state_keys import check_keys
from engine.model.vae_blocks import (CausalConv3d, ConvCache, DownBlock, MidBlock, RMSNorm,
                               SpatialNorm, UpBlock, inplace_ok)

LATENT_FRAMES_PER_CHUNK = 2  # decoder: latent frames per call after the first chunk (official)


def vae_config(name: str | VAEConfig) -> VAEConfig:
    """Named VAE configuration: "released" (infinitystar_videovae.pth), "golden" (golden tests) or
    "tiny" (engine.presets.VAE_CONFIGS); a VAEConfig is returned as it is."""
    if isinstance(name, VAEConfig):
        return name
    try:
        return VAE_CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown VAE config {name!r}; known: {', '.join(VAE_CONFIGS)}") from None


def bit_mask(bits: int) -> Tensor:
    """2^(d-1) … 2^0 as int64; the top bit of the 64-bit mask wraps to -2^63 like the original."""
    return torch.ones(bits, dtype=torch.int64) << torch.arange(bits - 1, -1, -1)


class _BitMask(nn.Module):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.register_buffer("mask", bit_mask(bits))


class QuantizerBuffers(nn.Module):
    """Stand-in for the official quantizer inside the VAE: only its (unused at inference) masks."""

    def __init__(self, semantic_dim: int, detail_dim: int) -> None:
        super().__init__()
        self.lfq_semantic = _BitMask(semantic_dim)
        self.lfq_detail = _BitMask(detail_dim)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = cfg.block_out_channels
        self.conv_in = CausalConv3d(cfg.in_channels, widths[0], 3)
        blocks = []
        for i in range(len(widths) - 1):
            has_t = i < len(cfg.temporal_compression)
            has_sampler = has_t or i < len(cfg.spatial_compression)
            time_factor = cfg.temporal_compression[i] if has_t else 1
            blocks.append(DownBlock(widths[i], widths[i + 1], cfg.layers_per_block,
                                    time_factor, has_sampler))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(widths[-1])
        self.norm_out = RMSNorm(widths[-1])
        self.conv_out = CausalConv3d(widths[-1], 2 * cfg.latent_channels, 3)

    def forward(self, x: Tensor, cache: ConvCache | None) -> Tensor:
        h = self.conv_in(x, cache)
        for block in self.down_blocks:
            h = block(h, cache)
        h = self.mid_block(h, cache)
        h = self.norm_out(h, inplace=True)
        return self.conv_out(F.silu(h, inplace=inplace_ok()), cache)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = list(reversed(cfg.block_out_channels))
        z = cfg.latent_channels
        n = len(widths) - 1
        self.conv_in = CausalConv3d(z, widths[0], 3)
        self.mid_block = MidBlock(widths[0], z)
        blocks = []
        for i in range(n):
            # The decoder mirrors the encoder: its last blocks carry the compression steps, the
            # temporal ones read back to front (official index -it, where -0 is element 0).
            it = i - (n - len(cfg.temporal_compression))
            has_s = i - (n - len(cfg.spatial_compression)) >= 0
            time_factor = cfg.temporal_compression[-it] if it >= 0 else 1
            blocks.append(UpBlock(widths[i], widths[i + 1], cfg.layers_per_block + 1, z,
                                  time_factor, it >= 0 or has_s))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = SpatialNorm(widths[-1], z)
        self.conv_out = CausalConv3d(widths[-1], cfg.out_channels, 3)

    def forward(self, z: Tensor, cache: ConvCache | None, split_first: bool = False) -> Tensor:
        """One decoder pass over latent frames z [B,16,t,h,w]; `split_first` marks an even-length
        first chunk whose frame 0 is still the causal first frame."""
        h = self.conv_in(z, cache)
        h = self.mid_block(h, cache, z)
        for block in self.up_blocks:
            h = block(h, cache, z, split_first)
        h = self.norm_out(h, z, inplace=True)
        return self.conv_out(F.silu(h, inplace=inplace_ok()), cache)


def fold_2x2(x: Tensor) -> Tensor:
    """Per-frame pixel-unshuffle: [B,C,T,2h,2w] -> [B,4C,T,h,w], channel 4c + 2i + j."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // 2, 2, w // 2, 2).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, 4 * c, t, h // 2, w // 2)


def unfold_2x2(x: Tensor) -> Tensor:
    """Inverse of `fold_2x2`: [B,4C,T,h,w] -> [B,C,T,2h,2w]."""
    b, c4, t, h, w = x.shape
    x = x.reshape(b, c4 // 4, 2, 2, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, c4 // 4, t, 2 * h, 2 * w)


def _channel_linear(x: Tensor, layer: nn.Linear) -> Tensor:
    return layer(x.movedim(1, -1)).movedim(-1, 1)


def decoder_chunks(latent_frames: int) -> list[tuple[int, int, bool]]:
    """(start, end, split_first) latent-frame ranges of the chunked decode.

    Official plan: 1 frame -> one call; odd T -> [0:3] then pairs; even T >= 4 -> [0:4] with
    `split_first` then pairs. T = 2 crashes officially; we decode it as one split-first call,
    which gives the first 5 frames that the same latents would give inside a longer even video.
    """
    if latent_frames < 1:
        raise VAEInputError("a latent needs at least one frame")
    step = LATENT_FRAMES_PER_CHUNK
    if latent_frames <= 2:
        return [(0, latent_frames, latent_frames == 2)]
    split_first = latent_frames % 2 == 0
    first = 4 if split_first else 3
    chunks = [(0, first, split_first)]
    chunks += [(s, s + step, False) for s in range(first, latent_frames, step)]
    return chunks


def encoder_chunks(frames: int, temporal_factor: int) -> list[tuple[int, int]]:
    """Pixel-frame ranges of the chunked encode: official first chunk 2f + T mod 2f, then 2f."""
    step = 2 * temporal_factor
    first = min(frames, step + frames % step)
    return [(0, first)] + [(s, s + step) for s in range(first, frames, step)]


def pixels_to_uint8(pixels: Tensor) -> Tensor:
    """Raw decoder output [B,3,T,H,W] -> uint8 RGB [B,T,H,W,3]: clamp((x+1)/2,0,1)·255, truncated."""
    x = ((pixels.float() + 1) / 2).clamp_(0, 1).mul_(255)
    return x.to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()


def smooth_first_frame(frames: Tensor) -> Tensor:
    """The official T2V/I2V post-processing: frame 0 replaced by frame 1 (time on dim 0).

    Not applied by the VAE itself; a pipeline opting in applies it to the first chunk of
    `VideoVAE.decode_frames` (always >= 5 frames when the video has more than one). A single
    frame is returned unchanged (the official code crashes there).
    """
    if frames.shape[0] < 2:
        return frames
    out = frames.clone()
    out[0] = frames[1]
    return out


class VideoVAE(nn.Module):
    """The InfinityStar video VAE; module names are the official state-dict keys."""

    def __init__(self, config: VAEConfig = VAEConfig()) -> None:
        super().__init__()
        self.config = config
        self.scale_learnable_parameters = nn.Parameter(torch.ones(4))
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = QuantizerBuffers(config.semantic_dim, config.detail_dim)
        self.quantize = self.quantizer  # official alias: the masks appear twice in the state dict
        width = config.feature_channels
        # The `_two` projections are unused at inference but part of the checkpoint.
        self.proj_down = nn.Linear(width, width)
        self.proj_down_two = nn.Linear(width, width)
        self.proj_up = nn.Linear(width, width)
        self.proj_up_two = nn.Linear(width, width)

    # ----------------------------------------------------------------------------- weights

    def load_official_state_dict(self, state_dict: Mapping[str, Tensor], assign: bool = False) -> None:
        """Strictly load an official VAE state dict (`ckpt["vae"]`).

        The only keys allowed to be absent are the quantizer `mask` buffers (constants, unused at
        inference); they are filled in. Anything else missing, unexpected or mis-shaped raises
        VAEWeightsError. `assign=True` adopts the tensors (model built on the meta device).
        """
        state = dict(state_dict)
        for prefix in ("quantizer", "quantize"):
            for name, bits in (("lfq_semantic", self.config.semantic_dim),
                               ("lfq_detail", self.config.detail_dim)):
                state.setdefault(f"{prefix}.{name}.mask", bit_mask(bits))
        check_keys({k: tuple(v.shape) for k, v in self.state_dict().items()},
                   {k: tuple(v.shape) for k, v in state.items()}, strict=True, source="The VAE state dict",
                   target=f"the {self.config.name!r} VAE config", error=VAEWeightsError)
        self.load_state_dict(state, strict=True, assign=assign)

    # ----------------------------------------------------------------------------- decoding

    def _check_latent(self, latent: Tensor) -> None:
        width = self.config.feature_channels
        if latent.ndim != 5 or latent.shape[1] != width or latent.shape[2] < 1:
            raise VAEInputError(
                f"latent must be [B,{width},T,h,w] with T >= 1, got {list(latent.shape)}")

    def latent_to_vae(self, latent: Tensor) -> Tensor:
        """Transformer latent [B,64,T,h,w] -> the decoder's 16-channel input [B,16,T,2h,2w]."""
        self._check_latent(latent)
        param = self.proj_up.weight
        z = latent.to(param.dtype) / self.scale_learnable_parameters[0]  # no clamp, as official
        return unfold_2x2(_channel_linear(z, self.proj_up))

    @torch.no_grad()
    def iter_decode(self, latent: Tensor) -> Iterator[Tensor]:
        """Decode chunk by chunk (see `decoder_chunks`), yielding raw pixels [B,3,t,H,W].

        Concatenated, the chunks equal one decoder pass over all frames; only one chunk's
        activations plus the causal caches (two frames per conv) are alive at a time.
        """
        z = self.latent_to_vae(latent)
        cache: ConvCache = {}
        for start, end, split_first in decoder_chunks(z.shape[2]):
            yield self.decoder(z[:, :, start:end], cache, split_first)

    def decode(self, latent: Tensor) -> Tensor:
        """Latent [B,64,T,h,w] -> raw (unclamped) pixels [B,3,1+4(T-1),16h,16w], RGB in ~[-1,1]."""
        return torch.cat(list(self.iter_decode(latent)), dim=2)

    def decode_frames(self, latent: Tensor) -> Iterator[Tensor]:
        """Stream uint8 RGB frames [t,H,W,3] chunk by chunk for a single latent [1,64,T,h,w]."""
        if latent.ndim == 5 and latent.shape[0] != 1:
            raise VAEInputError(f"decode_frames takes one video (batch 1), got batch {latent.shape[0]}")
        for chunk in self.iter_decode(latent):
            yield pixels_to_uint8(chunk)[0]

    # ----------------------------------------------------------------------------- encoding

    def _check_pixels(self, x: Tensor) -> None:
        cfg = self.config
        s, f = cfg.spatial_factor, cfg.temporal_factor
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise VAEInputError(
                f"video must be [B,{cfg.in_channels},T,H,W] in [-1,1], got {list(x.shape)}")
        t, h, w = x.shape[2:]
        if t % f != 1 % f:
            raise VAEInputError(f"frame count must be 1 + {f}k (1, {1 + f}, {1 + 2 * f}, …), got {t}")
        if h % s or w % s or h == 0 or w == 0:
            raise VAEInputError(f"height and width must be positive multiples of {s}, got {h}x{w}")

    @torch.no_grad()
    def encode_moments(self, x: Tensor) -> Tensor:
        """Pixels [B,3,T,H,W] in [-1,1] -> folded posterior moments [B,128,t,H/16,W/16]
        (channels 0..63 mean, 64..127 log-variance, both in the 2x2-folded layout)."""
        self._check_pixels(x)
        x = x.to(self.proj_down.weight.dtype)
        cache: ConvCache = {}
        parts = [self.encoder(x[:, :, s:e], cache)
                 for s, e in encoder_chunks(x.shape[2], self.config.temporal_factor)]
        return fold_2x2(torch.cat(parts, dim=2))

    @torch.no_grad()
    def encode_raw_features(self, x: Tensor, generator: torch.Generator | None = None,
                            sample: bool = True, eps: Tensor | None = None) -> Tensor:
        """Pixels [B,3,1+4k,H,W] in [-1,1] -> raw latent [B,64,1+k,H/16,W/16] (spec §4.1–4.2).

        The official code samples the posterior (mean + std·ε) from the unseeded global RNG; here
        ε comes from `generator` (global RNG if None), `sample=False` uses the mean, and `eps`
        injects a given ε (tests). Result = proj_down(z)·scale_learnable_parameters[0].
        """
        mean, std = gaussian_posterior(self.encode_moments(x))
        if eps is not None:
            z = mean + std * eps.to(mean)
        elif sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + std * noise
        else:
            z = mean
        return _channel_linear(z, self.proj_down) * self.scale_learnable_parameters[0]


def gaussian_posterior(moments: Tensor) -> tuple[Tensor, Tensor]:
    """Folded moments -> (mean, std) with log-variance clamped to [-30, 20] (official)."""
    mean, logvar = moments.chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

