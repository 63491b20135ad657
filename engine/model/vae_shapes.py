"""Which VAE configuration a checkpoint's tensor shapes describe, and where a declared one disagrees.

A model folder is self-describing: its `infinistar.json` may give the VAE's fields (`"vae": {...}`,
the names of `engine.presets.VAEConfig`); otherwise the configuration is read off the checkpoint's
shapes (block widths, blocks, resnets per block, latent channels, which blocks sample in time and by
how much). Either way the configuration is checked against every tensor shape before any weight is
used, and a disagreement is one line naming the first field and tensor that differ.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Optional

import torch

from engine.errors import VAEWeightsError
from engine.presets import VAEConfig
from engine.model.vae import VideoVAE

Shapes = Mapping[str, tuple[int, ...]]
# The quantizer's constant masks: optional in a checkpoint (engine.model.vae fills them in).
MASK_PREFIXES = ("quantizer.", "quantize.")


class VAEConfigError(VAEWeightsError):
    """The VAE checkpoint fits neither the declared configuration nor one read off its shapes."""


def expected_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """{state-dict key: shape} of the VAE `config` builds (on the meta device: nothing allocated)."""
    try:
        with torch.device("meta"):
            vae = VideoVAE(config)
    except ValueError as error:
        raise VAEConfigError(f"VAE configuration {config.name!r} cannot be built: {error}") from None
    return {k: tuple(v.shape) for k, v in vae.state_dict().items()}


def first_mismatch(config: VAEConfig, found: Shapes) -> Optional[str]:
    """The first tensor (in module order) whose presence or shape differs, described; None if all fit."""
    expected = expected_shapes(config)
    for key, shape in expected.items():
        if key not in found:
            if not key.startswith(MASK_PREFIXES):
                return f"{key} is missing from the file"
        elif tuple(found[key]) != shape:
            return f"{key} is {list(found[key])} in the file, {list(shape)} in the model"
    extra = next((k for k in found if k not in expected), None)
    return None if extra is None else f"{extra} is in the file but not in the model"


def _count(found: Shapes, pattern: str) -> int:
    n = 0
    while any(k.startswith(pattern.format(n) + ".") for k in found):
        n += 1
    return n


def _shape(found: Shapes, key: str) -> tuple[int, ...]:
    if key not in found:
        raise VAEConfigError(f"it has no {key}")
    return tuple(found[key])


def infer_vae_config(found: Shapes, like: VAEConfig = VAEConfig()) -> VAEConfig:
    """The configuration whose tensors have exactly the `found` shapes (fields no shape shows are
    taken from `like`); VAEConfigError with the reason when there is none."""
    blocks = _count(found, "encoder.down_blocks.{}")
    if not blocks:
        raise VAEConfigError("it has no encoder.down_blocks")
    widths = [_shape(found, f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight")[0] for i in range(blocks)]
    widths.append(_shape(found, "encoder.norm_out.gamma")[0])
    layers = _count(found, "encoder.down_blocks.0.resnets.{}")
    samplers = [f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.conv.weight" in found for i in range(blocks)]
    spatial = sum(samplers)
    if samplers != [True] * spatial + [False] * (blocks - spatial):
        raise VAEConfigError("its encoder samplers are not in the leading blocks")
    # The decoder's DC up-samplers show the time factors (conv width = out · 4 · factor); its last
    # blocks carry them in the official order tc[0], tc[-1], tc[-2], ...
    reverse = widths[::-1]
    factors = []
    for i in range(blocks):
        key = f"decoder.up_blocks.{i}.upsamplers.0.conv.conv.conv.weight"
        factors.append(_shape(found, key)[0] // (4 * reverse[i + 1]) if key in found else 1)
    temporal = 0
    while temporal < blocks and factors[blocks - 1 - temporal] > 1:
        temporal += 1
    tail = factors[blocks - temporal:]
    order = tail[:1] + tail[1:][::-1]
    masks = {name: found.get(f"quantizer.{name}.mask") for name in ("lfq_semantic", "lfq_detail")}
    try:
        config = dataclasses.replace(
            like, name="inferred", in_channels=_shape(found, "encoder.conv_in.conv.weight")[1],
            out_channels=_shape(found, "decoder.conv_out.conv.weight")[0],
            latent_channels=_shape(found, "encoder.conv_out.conv.weight")[0] // 2,
            block_out_channels=tuple(widths), layers_per_block=layers,
            spatial_compression=(2,) * spatial, temporal_compression=tuple(order),
            semantic_dim=masks["lfq_semantic"][0] if masks["lfq_semantic"] else like.semantic_dim,
            detail_dim=masks["lfq_detail"][0] if masks["lfq_detail"] else like.detail_dim)
    except ValueError as error:
        raise VAEConfigError(str(error)) from None
    mismatch = first_mismatch(config, found)
    if mismatch:
        raise VAEConfigError(f"no configuration explains its shapes ({mismatch})")
    return config


def _shown(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def resolve_vae_config(config: VAEConfig, found: Shapes, declared: Sequence[str], file: str,
                       description: str) -> VAEConfig:
    """The configuration to build for the checkpoint `file` with shapes `found`.

    `config` is what the preset and `infinistar.json` say; `declared` names the fields the json
    (`description`) gave explicitly. Fits: `config`. Declared fields that the shapes contradict:
    an error naming the first of them. Otherwise the configuration read off the shapes (it agrees
    with every declared field), or an error when the shapes describe none.
    """
    mismatch = first_mismatch(config, found)
    if mismatch is None:
        return config
    try:
        inferred = infer_vae_config(found, config)
    except VAEConfigError as error:
        inferred, reason = None, str(error)
    wrong = [f for f in declared if inferred is not None and f != "name" and getattr(config, f) != getattr(inferred, f)]
    if wrong:
        f = wrong[0]
        raise VAEConfigError(
            f"{description} contradicts {file}: vae.{f} is {_shown(getattr(config, f))} there, but the "
            f"checkpoint has {_shown(getattr(inferred, f))} (first mismatching tensor: {mismatch}).")
    if inferred is None and declared:
        raise VAEConfigError(f"{description} does not describe {file}: {mismatch}.")
    if inferred is None:
        raise VAEConfigError(
            f"{file} does not fit the {config.name!r} VAE configuration ({mismatch}), and its configuration "
            f"cannot be read off its shapes ({reason}); describe it under \"vae\" in {description}.")
    return dataclasses.replace(inferred, name=config.name if declared else inferred.name)
