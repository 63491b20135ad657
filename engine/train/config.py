"""What a training run is told: steps, batch sizes and learning rates of both phases, the
learning-rate curve, and the progress callback the phases report to."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Log = Callable[[str, int, dict], None]  # (phase, step, metrics)


def no_log(phase: str, step: int, metrics: dict) -> None:
    pass


@dataclass(frozen=True)
class TrainConfig:
    """Steps, batch sizes and learning rates of both phases (defaults: the shipped tiny model)."""

    seed: int = 0
    vae_steps: int = 2500  # autoencoder steps on single frames (`vae_phase`)
    vae_batch: int = 8  # frames per VAE step
    vae_lr: float = 1e-3  # 2e-3 left an earlier tiny VAE colour-blind (brightness only)
    # The latent the transformer sees is the encoder's times this (`scale_learnable_parameters[0]`; the
    # decoder divides it out). The quantizer's codes are +-1/8 per step whatever the latent's size, so
    # the scale trades depth for precision: at 1 (mean |component| 0.58) the 2-4 video steps per scale
    # of an earlier schedule lost the object in the later frames; at 0.5 the squares' corners were
    # lost to the quantization error (README, "The tiny model").
    latent_scale: float = 0.75
    videos: int = 800  # clips encoded once for the transformer phase
    steps: int = 3600
    batch: int = 24
    lr: float = 2e-3
    text_lr: float = 1e-3
    cond_drop: float = 0.1
    # Share of transformer steps on the preset's longest videos (extend). 0.5: with uncached_reps the
    # 0.25 of before left extend at 24/36 of the tuning cases (30/36 at 0.5; t2v 34 and 36 at its best CFG).
    long_share: float = 0.5
    warmup: int = 100
    uncached_reps: int = 1  # 1: also train the earlier repetitions of cached scales (`uncached_reps`)
    # Bitwise self-correction: each clip's fed bits flipped with a probability in [0, max_flip] (`corrected_bits`).
    max_flip: float = 0.2

    def __post_init__(self) -> None:
        for name in ("vae_batch", "batch", "videos"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


