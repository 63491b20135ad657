"""Build a preset's three components (transformer, VAE, text encoder) and fill them with weights.

A model is a folder in the official layout: the transformer folder named by the preset's
`checkpoint_dir` (safetensors shards + index), `infinitystar_videovae.pth` (or an already
converted `infinitystar_videovae.safetensors`) and `text_encoder/flan-t5-xl-official/`. An optional
`infinistar.json` overrides preset fields; its `name` picks the preset it starts from. The tiny
preset ships as such a folder inside the package (`engine/assets/tiny`), so it loads through the
same code as the 8B models, with no download.

Modules are built on the meta device and adopt the memory-mapped tensors (`assign=True`): no
random init of 8B parameters and no second copy of the weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from engine import hub, offload, presets, quant, weights
from engine.errors import InfinistarError
from engine.presets import Preset
from engine.text import TextEncoder
from engine.transformer import InfinityTransformer
from engine.vae import VideoVAE, vae_config

TINY_DIR = hub.BUILT_IN["tiny"]
VAE_SAFETENSORS = Path(hub.VAE_FILE).with_suffix(".safetensors").name
TINY_TEXT_WEIGHTS = Path("text_encoder") / "tiny.safetensors"
BLOCK_PREFIXES = ("block_chunks.", "blocks.")  # state-dict keys of the transformer blocks


class ModelSourceError(InfinistarError):
    """`--model` names neither a preset nor a usable model folder."""


@dataclass
class Components:
    """Everything a pipeline computes with, on one device."""

    preset: Preset
    transformer: InfinityTransformer
    vae: VideoVAE
    text: TextEncoder
    device: torch.device
    source: str  # where the weights came from (folder path)
    offload: str = "none"  # engine.offload mode
    weights: str = "bf16"  # engine.quant mode of the transformer blocks' linears
    offloader: Optional[offload.Offloader] = None  # set when offloading is active


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


def block_dtype_for(device: torch.device):
    """Per-key dtype while loading: on CUDA the blocks in bf16 (as released), all else fp32."""
    if device.type != "cuda":
        return lambda key: torch.float32
    return lambda key: torch.bfloat16 if key.startswith(BLOCK_PREFIXES) else torch.float32


def preset_for_folder(folder: Path) -> Preset:
    """The preset a model folder starts from, with its `infinistar.json` overrides applied."""
    overrides = weights.read_model_overrides(folder, Preset)
    base_name = overrides.get("name")
    if base_name in presets.names():
        base = presets.get(base_name)
    else:
        found = [presets.get(n) for n in presets.names() if (folder / presets.get(n).checkpoint_dir).is_dir()]
        if not found:
            dirs = ", ".join(presets.get(n).checkpoint_dir for n in presets.names())
            raise ModelSourceError(f"{folder} holds no transformer folder (looked for {dirs}).")
        base = found[0]
    return weights.apply_overrides(base, overrides)


def load_transformer(preset: Preset, folder: Path, device: torch.device, weights_mode: str = "bf16",
                     home: Optional[torch.device] = None) -> InfinityTransformer:
    """The transformer for compute on `device`, its tensors placed on `home` (default: device).

    8-bit modes read every tensor memory-mapped as stored, then quantize the blocks' linears
    one block at a time straight onto `home`: no float copy of the model is made there.
    """
    home = home or device
    with torch.device("meta"):
        model = InfinityTransformer(preset.transformer)
    if quant.check_mode(weights_mode) == "bf16":
        weights.load_safetensors_dir(model, folder, dtype_for=block_dtype_for(device), device=home)
    else:
        block_dtype = block_dtype_for(device)("blocks.")
        keep_blocks = lambda key: None if key.startswith(BLOCK_PREFIXES) else torch.float32  # noqa: E731
        weights.load_safetensors_dir(model, folder, dtype_for=keep_blocks, device="cpu")
        quant.quantize_transformer(model, weights_mode, home, dtype=block_dtype)
        model.to(device=home)  # embeddings and heads; the blocks are there already
    return model.eval().requires_grad_(False)


def load_vae(preset: Preset, folder: Path, device: torch.device) -> VideoVAE:
    converted, pth = folder / VAE_SAFETENSORS, folder / hub.VAE_FILE
    if converted.is_file():
        state = weights.load_safetensors_file(converted)
    elif pth.is_file():
        state = weights.load_torch_checkpoint(pth, key="vae")
    else:
        raise ModelSourceError(f"{folder} has no {hub.VAE_FILE}.")
    with torch.device("meta"):
        vae = VideoVAE(vae_config(preset.vae))
    vae.load_official_state_dict(state, assign=True)
    return vae.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def load_text_encoder(preset: Preset, folder: Path, device: torch.device,
                      dtype: Optional[torch.dtype] = None) -> TextEncoder:
    if preset.text_encoder == "tiny":
        trained = folder / TINY_TEXT_WEIGHTS
        return TextEncoder.tiny(weights=trained if trained.is_file() else None, device=device)
    t5 = folder / hub.T5_DIR
    if not t5.is_dir():
        raise ModelSourceError(f"{folder} has no text encoder folder {hub.T5_DIR}.")
    return TextEncoder.from_pretrained(t5, device=device, dtype=dtype)


def load_components(model: str | Path, device: str | torch.device = "auto",
                    cache_dir: str | Path | None = None, offload_mode: str = "none",
                    weights_mode: str = "bf16") -> Components:
    """Load a preset (from the package or the download cache) or a model folder.

    `offload_mode` (engine.offload) and `weights_mode` (engine.quant) trade speed for GPU memory.
    """
    offload.check_mode(offload_mode)
    quant.check_mode(weights_mode)
    device = resolve_device(device)
    if weights_mode == "fp8" and device.type == "mps":
        raise quant.WeightModeError("--weights fp8 needs float8 tensors, which MPS lacks; use --weights int8.")
    name = str(model)
    if name in presets.names():
        preset = presets.get(name)
        folder = TINY_DIR if name == "tiny" else hub.resolve_model_dir(name, cache_dir)
    elif Path(name).is_dir():
        folder = Path(name)
        preset = preset_for_folder(folder)
    elif "/" in name or "\\" in name or name.startswith("."):
        raise ModelSourceError(f"model folder {name} does not exist.")
    else:
        preset = presets.get(name)  # an unknown name: UnknownPresetError lists the known ones
    home = offload.home_device(offload_mode, device)
    transformer = load_transformer(preset, folder / preset.checkpoint_dir, device, weights_mode, home)
    vae = load_vae(preset, folder, home)
    text = load_text_encoder(preset, folder, home, torch.bfloat16 if device.type == "cuda" else None)
    if text.channels != preset.transformer.text_channels:
        raise ModelSourceError(
            f"text encoder width {text.channels} does not match the transformer's {preset.transformer.text_channels}."
        )
    offloader = offload.attach(offload_mode, device, transformer, text.model, vae)
    return Components(preset, transformer, vae, text, device, str(folder), offload_mode, weights_mode, offloader)
