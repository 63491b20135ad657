"""Multi-scale BSQ: raw VAE latent <-> per-step bit tensors, one accumulator for both directions.

A step (scale si, repetition r) carries bits [B, t, h, w, d] (d = 16 semantic / 64 detail).
Codes are (2*bit - 1)/sqrt(d); they are resampled over (channel, height, width) to the clip's
full (vae_channels, H, W) and summed per clip; time is never resampled (vae spec §4.3-§5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.model.schedule import Schedule


def resample_channels_space(x: torch.Tensor, size: tuple[int, int, int], mode: str) -> torch.Tensor:
    """Resize [B, C, T, H, W] to (C1, H1, W1) over (channel, height, width); T is untouched.

    mode 'area' (adaptive average) downsamples, 'trilinear' (align_corners=False) upsamples.
    """
    if tuple(x.shape[1:2] + x.shape[3:]) == tuple(size):
        return x
    y = F.interpolate(x.transpose(1, 2), size=size, mode=mode)
    return y.transpose(1, 2)


def bits_to_codes(bits: torch.Tensor) -> torch.Tensor:
    """Bits [B, t, h, w, d] in {0,1} -> codes [B, d, t, h, w] fp32, +-1/sqrt(d) (BSQ indices_to_codes)."""
    signs = bits.to(torch.float32) * 2 - 1
    return F.normalize(signs, dim=-1).permute(0, 4, 1, 2, 3)


def quantize_bits(residual: torch.Tensor) -> torch.Tensor:
    """BSQ labels of [B, d, t, h, w]: bit = 1 where the l2-normalised component is > 0 -> [B, t, h, w, d]."""
    unit = F.normalize(residual.to(torch.float32), dim=1)
    return (unit > 0).to(torch.uint8).permute(0, 2, 3, 4, 1)


class LatentAccumulator:
    """Per-clip running sums of upsampled codes: what the sampler feeds back and the VAE decodes.

    Each clip accumulates at its own (t, H, W), so a partial last clip works (the reference resizes
    to the last scale's t and crashes there).
    """

    def __init__(self, schedule: Schedule, batch: int = 1, device: torch.device | str = "cpu") -> None:
        self.schedule = schedule
        self.clips = [
            torch.zeros(batch, schedule.vae_channels, *shape, device=device, dtype=torch.float32)
            for shape in schedule.clip_shapes
        ]

    def add_bits(self, si: int, bits: torch.Tensor) -> None:
        """Add the codes of one step of scale si to its clip's sum."""
        acc = self.clips[self.schedule.infos[si].clip]
        codes = bits_to_codes(bits.to(acc.device))
        acc += resample_channels_space(codes, (acc.shape[1], acc.shape[3], acc.shape[4]), "trilinear")

    def scale_input(self, si: int) -> torch.Tensor:
        """The running sum of si's clip, area-downsampled to scale si's (t, h, w): next step's input."""
        acc = self.clips[self.schedule.infos[si].clip]
        shape = self.schedule.infos[si].shape
        return acc if tuple(acc.shape[2:]) == shape else F.interpolate(acc, size=shape, mode="area")

    def latent(self) -> torch.Tensor:
        """[B, vae_channels, latent_frames, H, W]: the clips concatenated along time."""
        return torch.cat(self.clips, dim=2)


def encode_bits(raw: torch.Tensor, schedule: Schedule) -> list[torch.Tensor]:
    """Multi-scale residual quantization of a raw latent [B, C, T, H, W] -> bits per step.

    Every repetition of every scale emits one [B, t, h, w, d] uint8 tensor, in step order; they
    can be forced into the sampler or summed back with `latent_from_bits`.
    """
    if raw.shape[2] != schedule.latent_frames or tuple(raw.shape[3:]) != schedule.clip_shapes[0][1:]:
        raise ValueError(
            f"latent {tuple(raw.shape[2:])} does not match the schedule "
            f"({schedule.latent_frames}, {schedule.clip_shapes[0][1]}, {schedule.clip_shapes[0][2]})"
        )
    raw = raw.to(torch.float32)
    acc = LatentAccumulator(schedule, raw.shape[0], raw.device)
    out = []
    for info in schedule.infos:
        target = raw[:, :, info.frame_ss : info.frame_ee]
        for _ in range(info.repetitions):
            residual = target - acc.clips[info.clip]
            small = resample_channels_space(residual, (info.bits, *info.shape[1:]), "area")
            bits = quantize_bits(small)
            acc.add_bits(info.index, bits)
            out.append(bits)
    return out


def latent_from_bits(bits: list[torch.Tensor], schedule: Schedule) -> torch.Tensor:
    """Sum per-step bits (the list `encode_bits` or the sampler produces) into the latent."""
    if len(bits) != schedule.num_steps:
        raise ValueError(f"expected {schedule.num_steps} bit tensors, got {len(bits)}")
    acc = LatentAccumulator(schedule, bits[0].shape[0], bits[0].device)
    i = 0
    for info in schedule.infos:
        for _ in range(info.repetitions):
            acc.add_bits(info.index, bits[i])
            i += 1
    return acc.latent()
