"""Helpers to read the golden fixtures (tests/fixtures/golden) and build the tiny model."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine import presets
from engine.presets import SamplingConfig

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


@lru_cache(maxsize=None)
def golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / f"{name}.safetensors")


@lru_cache(maxsize=None)
def golden_meta(name: str) -> dict:
    with safe_open(GOLDEN / f"{name}.safetensors", "pt") as f:
        return json.loads(f.metadata()["json"])


# The sampling defaults the golden fixtures were made with (the released ones); the tiny preset's
# own defaults are tuned for the trained tiny model and may differ.
GOLDEN_SAMPLING = SamplingConfig()

# The tiny preset (base scales, VAE, depth) with the fixtures' own transformer width and repetitions,
# which the tiny preset's may leave: config.json's embed_dim / num_heads / num_key_value_heads /
# mlp hidden size and image_scale_repetition / video_scale_repetition.
_TINY = presets.get("tiny")
GOLDEN_PRESET = replace(
    _TINY,
    transformer=replace(_TINY.transformer, embed_dim=64, num_heads=2, num_kv_heads=1, mlp_hidden=256),
    schedule=replace(_TINY.schedule, image_rep=(2, 2, 2, 2), video_rep=(2, 2, 1, 1)),
)


def tiny_model():
    from engine.model.transformer import InfinityTransformer

    model = InfinityTransformer(GOLDEN_PRESET.transformer)
    model.load_state_dict(golden("tiny_transformer"), strict=True)
    return model.eval().requires_grad_(False)
