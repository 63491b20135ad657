"""Build a preset's three components (transformer, VAE, text encoder) and fill them with weights.

A model is a folder in the official layout: the transformer folder named by the preset's
`checkpoint_dir` (safetensors shards + index), `infinitystar_videovae.pth` (or an already
converted `infinitystar_videovae.safetensors`) and `text_encoder/flan-t5-xl-official/`. An optional
`infinistar.json` (engine.checkpoints.model_folder) overrides preset fields (`base` names the preset it starts from) or describes the
whole model; the VAE's configuration may also be read off its checkpoint (engine.model.vae_shapes). The tiny
preset ships as such a folder inside the package (`engine/assets/tiny`), so it loads through the
same code as the 8B models, with no download.

Modules are built on the meta device and adopt the memory-mapped tensors (`assign=True`): no
random init of 8B parameters and no second copy of the weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from engine import presets
from engine.checkpoints import hub, offload, speed, weights
from engine.checkpoints.model_folder import OVERRIDES_FILE, ModelDescription, ModelSourceError, describe_folder
from engine.model import eight_bit
from engine.errors import InfinistarError
from engine.presets import Preset
from engine.model.text_encoder import TextEncoder
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE
from engine.model.vae_shapes import resolve_vae_config

TINY_DIR = hub.BUILT_IN["tiny"]
VAE_SAFETENSORS = Path(hub.VAE_FILE).with_suffix(".safetensors").name
TINY_TEXT_WEIGHTS = Path("text_encoder") / "tiny.safetensors"
BLOCK_PREFIXES = ("block_chunks.", "blocks.")  # state-dict keys of the transformer blocks


@dataclass
class Components:
    """Everything a pipeline computes with, on one device."""

    preset: Preset
    transformer: InfinityTransformer
    vae: VideoVAE
    text: TextEncoder
    device: torch.device
    source: str  # where the weights came from (folder path)
    offload: str = "none"  # engine.checkpoints.offload mode
    weights: str = "bf16"  # engine.model.eight_bit mode of the transformer blocks' linears
    offloader: Optional[offload.Offloader] = None  # set when offloading is active
    dtype: str = "auto"  # engine.checkpoints.speed compute dtype mode
    compiled: bool = False  # transformer blocks torch.compile'd (engine.checkpoints.speed)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda, else mps, else cpu; an explicit device that is absent is an error."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InfinistarError("--device cuda was asked for, but PyTorch sees no CUDA GPU here.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InfinistarError("--device mps was asked for, but this PyTorch has no MPS support.")
    return device


def device_memory(device: torch.device) -> tuple[Optional[str], Optional[int], Optional[int]]:
    """(GPU name, free bytes, total bytes) of a CUDA device; (None, None, None) elsewhere."""
    if device.type != "cuda":
        return None, None, None
    index = device.index if device.index is not None else torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    return torch.cuda.get_device_name(index), int(free), int(total)


def block_dtype_for(device: torch.device, dtype: str = "auto"):
    """Per-key dtype while loading: the blocks in `speed.block_dtype` (auto: bf16 on CUDA as
    released, fp32 elsewhere), all else fp32."""
    blocks = speed.block_dtype(dtype, device)
    if blocks == torch.float32:
        return lambda key: torch.float32
    return lambda key: blocks if key.startswith(BLOCK_PREFIXES) else torch.float32


def load_transformer(preset: Preset, folder: Path, device: torch.device, weights_mode: str = "bf16",
                     home: Optional[torch.device] = None, described_by: Optional[str] = None,
                     dtype: str = "auto") -> InfinityTransformer:
    """The transformer for compute on `device`, its tensors placed on `home` (default: device).
    `described_by` (an infinistar.json) is named in a shape-mismatch error.

    8-bit modes read every tensor memory-mapped as stored, then quantize the blocks' linears
    one block at a time straight onto `home`: no float copy of the model is made there.
    """
    home = home or device
    source = f"{folder}, built as {described_by} says," if described_by else None
    with torch.device("meta"):
        model = InfinityTransformer(preset.transformer)
    if eight_bit.check_mode(weights_mode) == "bf16":
        weights.load_safetensors_dir(model, folder, dtype_for=block_dtype_for(device, dtype), device=home,
                                     source=source)
    else:
        block_dtype = block_dtype_for(device, dtype)("blocks.")
        keep_blocks = lambda key: None if key.startswith(BLOCK_PREFIXES) else torch.float32  # noqa: E731
        weights.load_safetensors_dir(model, folder, dtype_for=keep_blocks, device="cpu", source=source)
        eight_bit.quantize_transformer(model, weights_mode, home, dtype=block_dtype)
        model.to(device=home)  # embeddings and heads; the blocks are there already
    return model.eval().requires_grad_(False)


def load_vae(preset: Preset, folder: Path, device: torch.device, vae_fields: tuple[str, ...] = (),
             source: str = "", dtype: torch.dtype = torch.float32) -> VideoVAE:
    """The VAE of `folder`, built as the preset says, or as its shapes say when the preset's
    configuration does not fit and `infinistar.json` states nothing contradicting them (vae_shapes)."""
    converted, pth = folder / VAE_SAFETENSORS, folder / hub.VAE_FILE
    if converted.is_file():
        file, state = converted, weights.load_safetensors_file(converted)
    elif pth.is_file():
        file, state = pth, weights.load_torch_checkpoint(pth, key="vae")
    else:
        raise ModelSourceError(f"{folder} has no {hub.VAE_FILE}.")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    description = source if source.endswith(".json") else str(folder / OVERRIDES_FILE)
    config = resolve_vae_config(preset.vae, shapes, vae_fields, str(file), description)
    with torch.device("meta"):
        vae = VideoVAE(config)
    vae.load_official_state_dict(state, assign=True)
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_text_encoder(preset: Preset, folder: Path, device: torch.device,
                      dtype: Optional[torch.dtype] = None) -> TextEncoder:
    if preset.text_encoder == "tiny":
        trained = folder / TINY_TEXT_WEIGHTS
        if not trained.is_file():
            return TextEncoder.tiny(device=device)
        with weights.reading_safetensors(trained):  # a cut file: one line naming it
            return TextEncoder.tiny(weights=trained, device=device)
    t5 = folder / hub.T5_DIR
    if not t5.is_dir():
        raise ModelSourceError(f"{folder} has no text encoder folder {hub.T5_DIR}.")
    for shard in sorted(t5.glob("*.safetensors")):  # a cut file: one line naming it
        weights.read_safetensors_header(shard)
    return TextEncoder.from_pretrained(t5, device=device, dtype=dtype)


def load_components(model: str | Path, device: str | torch.device = "auto",
                    cache_dir: str | Path | None = None, offload_mode: str = "none",
                    weights_mode: str = "bf16", dtype: str = "auto", compile: bool = False,
                    parallel: str = "none") -> Components:
    """Load a preset (from the package or the download cache) or a model folder.

    `offload_mode` (engine.checkpoints.offload) and `weights_mode` (engine.model.eight_bit) trade speed for GPU memory;
    `dtype` and `compile` (engine.checkpoints.speed) trade exactness or start-up time for speed;
    `parallel="tensor"` loads only this rank's shard of the transformer blocks (engine.parallel.tensor_parallel).
    """
    if parallel != "none":
        from engine.parallel import tensor_parallel

        tensor_parallel.check_modes(parallel, offload_mode, weights_mode)
    offload.check_mode(offload_mode)
    eight_bit.check_mode(weights_mode)
    speed.check_dtype(dtype)
    device = resolve_device(device)
    if weights_mode == "fp8" and device.type == "mps":
        raise eight_bit.WeightModeError("--weights fp8 needs float8 tensors, which MPS lacks; use --weights int8.")
    name = str(model)
    if name in presets.names():
        described = ModelDescription(presets.get(name))
        folder = TINY_DIR if name == "tiny" else hub.resolve_model_dir(name, cache_dir)
    elif Path(name).is_dir():
        folder = Path(name)
        described = describe_folder(folder)
    elif "/" in name or "\\" in name or name.startswith("."):
        raise ModelSourceError(f"model folder {name} does not exist.")
    else:
        described = ModelDescription(presets.get(name))  # unknown: UnknownPresetError lists the known ones
    preset = described.preset
    home = offload.home_device(offload_mode, device)
    speed.block_dtype(dtype, device)  # refuses a dtype the device cannot run before loading anything
    if parallel == "none":
        transformer = load_transformer(preset, folder / preset.checkpoint_dir, device, weights_mode, home,
                                       described.source if described.source.endswith(".json") else None, dtype)
    else:
        transformer = tensor_parallel.load_sharded_transformer(preset, folder / preset.checkpoint_dir, device)
    vae = load_vae(preset, folder, home, described.vae_fields, described.source, speed.vae_dtype(dtype, device))
    if vae.config.feature_channels != preset.transformer.vae_channels:
        raise ModelSourceError(
            f"the VAE makes {vae.config.feature_channels}-channel latents (4 x vae.latent_channels "
            f"{vae.config.latent_channels}), the transformer takes {preset.transformer.vae_channels} "
            "(transformer.vae_channels).")
    preset = dataclasses.replace(preset, vae=vae.config)
    text = load_text_encoder(preset, folder, home, torch.bfloat16 if speed.uses_autocast(dtype, device) else None)
    if text.channels != preset.transformer.text_channels:
        raise ModelSourceError(
            f"text encoder width {text.channels} does not match the transformer's {preset.transformer.text_channels}."
        )
    offloader = offload.attach(offload_mode, device, transformer, text.model, vae)
    if compile:
        speed.compile_blocks(transformer)
    return Components(preset, transformer, vae, text, device, str(folder), offload_mode, weights_mode, offloader,
                      dtype, compile)
