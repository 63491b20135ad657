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
    # Share of transformer steps on the preset's longest videos (extend). 0.5: with uncached_reps the
    # 0.25 of before left extend at 24/36 of the tuning cases (30/36 at 0.5; t2v 34 and 36 at its best CFG).
    long_share: float = 0.5
    warmup: int = 100
    uncached_reps: int = 1  # 1: also train the earlier repetitions of cached scales (`uncached_reps`)

    def __post_init__(self) -> None:
        if self.vae_steps > self.ae_steps and not (self.vae_batch or self.vae_image_batch):
            raise ValueError("the quantized VAE steps need clips or frames: vae_batch or vae_image_batch > 0")


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


