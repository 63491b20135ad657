"""Self-describing model folders: an official-layout folder whose VAE is not a built-in width,
described by its infinistar.json or read off its checkpoint, through the real CLI."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_model

from engine import presets
from engine.presets import VAE_CONFIGS, VAEConfig
from engine.model.text_encoder import TextEncoder
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE
from engine.model.vae_shapes import VAEConfigError, expected_shapes, infer_vae_config, resolve_vae_config
from engine.media.video_io import read_metadata
from engine.checkpoints.weights import write_safetensors_dir
from cli_fakes import error_line, invoke

TINY = presets.get("tiny")
WIDE_VAE = VAEConfig(name="wide", block_out_channels=(6, 12, 12, 12, 12))


def _plain(value):
    """A dataclass field value as JSON has it (tuples become lists)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def full_description(**changes) -> dict:
    """An infinistar.json that states every field: the tiny architecture, its own name, folder and VAE."""
    preset = dataclasses.replace(TINY, name="mini-wide", checkpoint_dir="mini_weights", vae=WIDE_VAE,
                                 description="tiny random weights, wider VAE",
                                 decoration=presets.PromptDecoration(suffix=", in miniature"))
    description = _plain(dataclasses.asdict(preset))
    for key, value in changes.items():
        if isinstance(value, dict):
            description[key].update(value)
        elif value is None:
            description.pop(key)
        else:
            description[key] = value
    return description


def write_official_folder(root: Path, vae: VAEConfig = WIDE_VAE, description: dict | None = None,
                          checkpoint_dir: str = "mini_weights") -> Path:
    """Tiny random weights in the official layout: sharded transformer + index, the VAE as a
    torch.save'd {'vae': state_dict} .pth, the text encoder under text_encoder/, an infinistar.json."""
    folder = root / "mini-wide"
    torch.manual_seed(0)
    transformer = InfinityTransformer(TINY.transformer)
    with torch.no_grad():
        for p in transformer.parameters():
            p.normal_(0, 0.05)
    write_safetensors_dir(transformer.state_dict(), folder / checkpoint_dir, max_shard_bytes=200_000)
    torch.save({"vae": VideoVAE(vae).state_dict()}, folder / "infinitystar_videovae.pth")
    (folder / "text_encoder").mkdir()
    save_model(TextEncoder.tiny(seed=1).model, str(folder / "text_encoder" / "tiny.safetensors"))
    if description is not None:
        (folder / "infinistar.json").write_text(json.dumps(description, indent=1))
    return folder


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_a_fully_described_folder_with_another_vae_width_generates(clean_env):
    folder = write_official_folder(clean_env, description=full_description())
    assert len(list((folder / "mini_weights").glob("model-*-of-*.safetensors"))) > 1
    base = ["--model", str(folder), "--seed", "4"]
    result = invoke("--device", "cpu", "t2v", "a red ball", *base, "-o", "v.mp4")
    assert result.exit_code == 0, result.stderr
    assert _frames(clean_env / "v.mp4").shape == (17, 48, 64, 3)
    meta = read_metadata(clean_env / "v.mp4")
    assert meta["preset"] == "mini-wide"
    assert meta["prompt_sent"] == "<<<t=1s>>>a red ball, in miniature"  # the folder's own decoration
    result = invoke("--device", "cpu", "t2i", "a red ball", *base, "-o", "i.png")
    assert result.exit_code == 0, result.stderr
    assert Image.open(clean_env / "i.png").size == (64, 48)
    meta = read_metadata(clean_env / "i.png")
    assert (meta["prompt_sent"], meta["prompt_decoration"]) == ("a red ball", False)
    result = invoke("--device", "cpu", "t2i", "a red ball", *base, "-o", "d.png", "--prompt-decoration")
    assert result.exit_code == 0, result.stderr
    meta = read_metadata(clean_env / "d.png")
    assert (meta["prompt_sent"], meta["prompt_decoration"]) == ("a red ball, in miniature", True)


def test_a_folder_without_vae_fields_reads_the_vae_off_its_checkpoint(clean_env):
    # `base` picks the tiny preset (whose VAE is 8-16-16-16-16); the checkpoint is 6-12-12-12-12.
    folder = write_official_folder(clean_env, description={"base": "tiny", "name": "my-model",
                                                           "checkpoint_dir": "mini_weights"})
    result = invoke("--device", "cpu", "i2v", str(_an_image(clean_env)), "--model", str(folder), "--seed", "1",
                    "-o", "v.mp4")
    assert result.exit_code == 0, result.stderr
    assert _frames(clean_env / "v.mp4").shape == (17, 48, 64, 3)


def _an_image(root: Path) -> Path:
    path = root / "in.png"
    Image.fromarray(np.full((48, 64, 3), (200, 30, 30), np.uint8)).save(path)
    return path


def test_an_infinistar_json_contradicting_the_vae_is_one_line_naming_the_field(clean_env):
    description = full_description(vae={"block_out_channels": [8, 16, 16, 16, 16]})
    folder = write_official_folder(clean_env, description=description)
    result = invoke("--device", "cpu", "t2v", "x", "--model", str(folder), "--seed", "1", "-o", "v.mp4")
    assert result.exit_code == 1
    line = error_line(result)
    assert "infinistar.json contradicts" in line and "vae.block_out_channels is [8, 16, 16, 16, 16]" in line
    assert "[6, 12, 12, 12, 12]" in line and "encoder.conv_in.conv.weight" in line
    assert not (clean_env / "v.mp4").exists()


def test_an_infinistar_json_contradicting_the_transformer_names_the_tensor(clean_env):
    folder = write_official_folder(clean_env, description=full_description(transformer={"mlp_hidden": 128}))
    result = invoke("--device", "cpu", "t2v", "x", "--model", str(folder), "--seed", "1", "-o", "v.mp4")
    assert result.exit_code == 1
    line = error_line(result)
    assert "infinistar.json" in line and "wrong shape" in line and "mlp" in line
    assert not (clean_env / "v.mp4").exists()


def test_a_vae_no_configuration_explains_is_a_clear_error(clean_env):
    folder = write_official_folder(clean_env, description={"base": "tiny", "checkpoint_dir": "mini_weights"})
    state = torch.load(folder / "infinitystar_videovae.pth")["vae"]
    state["encoder.norm_out.gamma"] = torch.ones(7, 1, 1, 1)  # a width no block has
    torch.save({"vae": state}, folder / "infinitystar_videovae.pth")
    result = invoke("--device", "cpu", "t2v", "x", "--model", str(folder), "--seed", "1", "-o", "v.mp4")
    assert result.exit_code == 1
    line = error_line(result)
    assert "does not fit the 'tiny' VAE configuration" in line and 'describe it under "vae"' in line


def test_a_partial_description_without_a_base_says_what_it_lacks(clean_env):
    folder = write_official_folder(clean_env, description=full_description(fps=None, frames=None))
    result = invoke("--device", "cpu", "t2v", "x", "--model", str(folder), "--seed", "1", "-o", "v.mp4")
    assert result.exit_code == 1
    assert "lacks fps, frames" in error_line(result)


@pytest.mark.parametrize("config", [
    VAE_CONFIGS["released"], VAE_CONFIGS["golden"], WIDE_VAE,
    VAEConfig(block_out_channels=(4, 8, 8, 8), spatial_compression=(2, 2), temporal_compression=(2,)),
    VAEConfig(block_out_channels=(4, 8, 8, 16, 16), layers_per_block=1, latent_channels=8,
              temporal_compression=(2, 4, 2), semantic_dim=8, detail_dim=32),
])
def test_vae_configuration_is_read_off_the_shapes(config):
    inferred = infer_vae_config(expected_shapes(config))
    assert dataclasses.replace(inferred, name=config.name) == config


def test_a_declared_field_that_agrees_keeps_the_shapes_reading():
    shapes = expected_shapes(dataclasses.replace(WIDE_VAE, layers_per_block=1))
    # The json states only the widths (right); the base's layers_per_block (2) does not fit.
    resolved = resolve_vae_config(WIDE_VAE, shapes, ("block_out_channels",), "vae.pth", "x.json")
    assert resolved.layers_per_block == 1
    with pytest.raises(VAEConfigError, match=r"x.json contradicts vae.pth: vae.layers_per_block is 2"):
        resolve_vae_config(WIDE_VAE, shapes, ("layers_per_block",), "vae.pth", "x.json")


def test_a_folder_with_its_own_name_keeps_its_base_presets_behaviour(tmp_path):
    from engine.checkpoints.model_folder import describe_folder

    (tmp_path / "infinistar.json").write_text(json.dumps({"base": "interact", "name": "my-interact"}))
    preset = describe_folder(tmp_path).preset
    assert preset.name == "my-interact" and preset.continuation == "interact"
    assert preset.decoration == presets.get("interact").decoration
    (tmp_path / "infinistar.json").write_text(json.dumps({"base": "480p", "name": "mine", "continuation": "x"}))
    with pytest.raises(Exception, match="continuation: 'x' is not one of"):
        describe_folder(tmp_path)
