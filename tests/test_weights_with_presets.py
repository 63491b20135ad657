"""The loader against the transformer the presets build (no real model is loaded): the released 720p
key table checked against its shapes on the meta device, the golden tiny checkpoint, shards, overrides."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from engine import presets
from engine.model.transformer import InfinityTransformer
from engine.checkpoints.model_folder import apply_overrides, read_model_overrides
from engine.checkpoints.weights import (
    WeightsError,
    load_safetensors_dir,
    write_safetensors_dir,
)
from engine.model.state_keys import check_keys
from golden_utils import GOLDEN_PRESET

FIXTURES = Path(__file__).parent / "fixtures"


def test_released_key_table_passes_the_strict_check():
    with torch.device("meta"):
        model = InfinityTransformer(presets.get("720p").transformer)
    table = json.loads((FIXTURES / "keys" / "transformer_8b_720p.json").read_text())
    released = {k: tuple(v[:-1]) for k, v in table.items()}
    check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, released, True, "released 720p")


def test_golden_tiny_checkpoint_loads_strictly(tmp_path):
    shutil.copy(FIXTURES / "golden" / "tiny_transformer.safetensors", tmp_path / "model.safetensors")
    with torch.device("meta"):
        model = InfinityTransformer(GOLDEN_PRESET.transformer)
    report = load_safetensors_dir(model, tmp_path, dtype_for=lambda k: torch.bfloat16 if k.startswith("block_chunks.") else None)
    assert report.tensors == 55
    assert model.layers()[0].attn.q_proj.weight.dtype == torch.bfloat16
    assert model.head.weight.dtype == torch.float32
    assert not any(p.is_meta for p in model.parameters())


def test_sharded_round_trip_of_the_tiny_transformer(tmp_path):
    torch.manual_seed(0)
    reference = InfinityTransformer(presets.get("tiny").transformer)
    for p in reference.parameters():
        torch.nn.init.normal_(p)
    write_safetensors_dir(reference.state_dict(), tmp_path, max_shard_bytes=200_000)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    with torch.device("meta"):
        model = InfinityTransformer(presets.get("tiny").transformer)
    load_safetensors_dir(model, tmp_path)
    for (name, a), (_, b) in zip(reference.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name


def test_overrides_on_the_real_preset(tmp_path):
    (tmp_path / "infinistar.json").write_text(json.dumps(
        {"transformer": {"depth": 12, "block_chunks": 2}, "schedule": {"base_scales": [[1, 1], [2, 3]]}, "fps": 24}
    ))
    preset = apply_overrides(presets.get("720p"), read_model_overrides(tmp_path, presets.Preset))
    assert preset.transformer.depth == 12 and preset.fps == 24
    assert preset.schedule.base_scales == ((1, 1), (2, 3))
    (tmp_path / "infinistar.json").write_text('{"schedule": {"base_scales": [[1, 1, 1]]}}')
    with pytest.raises(WeightsError, match="base_scales"):
        read_model_overrides(tmp_path, presets.Preset)
