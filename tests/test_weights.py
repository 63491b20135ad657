import dataclasses
import os
from pathlib import Path
from typing import Literal, Optional

import pytest
import torch
from official_style import TinyOfficial

from engine.errors import InfinistarError, WeightsMismatchError
from engine.checkpoints.model_folder import apply_overrides, read_model_overrides
from engine.checkpoints.weights import (
    INDEX_FILE,
    SafetensorsFormatError,
    UnsafeCheckpointError,
    WeightsError,
    convert_pth_to_safetensors,
    load_safetensors_dir,
    load_state_dict_checked,
    load_torch_checkpoint,
    read_safetensors_header,
    write_safetensors_dir,
)


def reference() -> TinyOfficial:
    torch.manual_seed(0)
    return TinyOfficial()


def on_meta() -> TinyOfficial:
    with torch.device("meta"):
        return TinyOfficial()


@pytest.fixture
def ckpt(tmp_path) -> Path:
    folder = tmp_path / "infinitystar_8b_720p_weights"
    write_safetensors_dir(reference().state_dict(), folder, max_shard_bytes=6_000)
    return folder


def test_written_layout_is_official(ckpt):
    shards = sorted(p.name for p in ckpt.glob("*.safetensors"))
    n = len(shards)
    assert n >= 3
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    import json

    index = json.loads((ckpt / INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(reference().state_dict())
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in reference().state_dict().values())


def test_loaded_module_matches_in_memory_one(ckpt):
    model = on_meta()
    report = load_safetensors_dir(model, ckpt)
    assert report.tensors == len(reference().state_dict())
    assert not any(p.is_meta for p in model.parameters())
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(x), reference()(x), rtol=0, atol=0)


def test_dtype_chosen_per_key(ckpt):
    model = on_meta()
    load_safetensors_dir(model, ckpt, dtype_for=lambda k: torch.bfloat16 if k.startswith("block_chunks.") else None)
    sd = model.state_dict()
    assert sd["block_chunks.1.module.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert sd["head.weight"].dtype == torch.float32 and sd["cfg_uncond"].dtype == torch.float32
    torch.testing.assert_close(sd["head.weight"], reference().state_dict()["head.weight"], rtol=0, atol=0)


def test_module_declared_dtype_is_used_without_dtype_for(ckpt):
    model = on_meta().to(torch.float16)
    load_safetensors_dir(model, ckpt)
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_single_file_checkpoint(tmp_path):
    paths = write_safetensors_dir(reference().state_dict(), tmp_path, max_shard_bytes=10**9)
    assert [p.name for p in paths] == ["model.safetensors"]
    model = on_meta()
    load_safetensors_dir(model, tmp_path)
    torch.testing.assert_close(model.head.weight, reference().head.weight, rtol=0, atol=0)


def test_truncated_shard_named(ckpt):
    shard = ckpt / sorted(p.name for p in ckpt.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(SafetensorsFormatError, match=rf"{shard.name} is truncated"):
        load_safetensors_dir(on_meta(), ckpt)
    shard.write_bytes(data[:5])
    with pytest.raises(SafetensorsFormatError, match=shard.name):
        read_safetensors_header(shard)


def test_missing_shard_named(ckpt):
    shard = sorted(ckpt.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(WeightsError, match=shard.name):
        load_safetensors_dir(on_meta(), ckpt)


def test_wrong_key_name_lists_both_sides(tmp_path):
    sd = reference().state_dict()
    sd["norm_hidden_states.weight"] = sd.pop("norm_hidden_sates.weight")  # the "fixed" spelling is wrong
    write_safetensors_dir(sd, tmp_path, max_shard_bytes=6_000)
    with pytest.raises(WeightsMismatchError) as info:
        load_safetensors_dir(on_meta(), tmp_path)
    message = str(info.value)
    assert "1 missing (norm_hidden_sates.weight)" in message
    assert "1 unexpected (norm_hidden_states.weight)" in message
    assert "\n" not in message and isinstance(info.value, InfinistarError)


def test_wrong_shape_reported(tmp_path):
    sd = reference().state_dict()
    sd["head.weight"] = torch.zeros(9, 16)
    write_safetensors_dir(sd, tmp_path, max_shard_bytes=6_000)
    with pytest.raises(WeightsMismatchError, match=r"1 wrong shape \(head.weight: file \[9, 16\], model \[8, 16\]\)"):
        load_safetensors_dir(on_meta(), tmp_path)


def test_many_missing_are_counted(tmp_path):
    sd = {k: v for k, v in reference().state_dict().items() if not k.startswith("block_chunks.1.")}
    write_safetensors_dir(sd, tmp_path, max_shard_bytes=6_000)
    with pytest.raises(WeightsMismatchError, match=r"22 missing \(block_chunks\.1\.module\.0\.attn\.q_proj\.weight, .*\+19\)"):
        load_safetensors_dir(on_meta(), tmp_path)
    report = load_safetensors_dir(on_meta(), tmp_path, strict=False)
    assert len(report.missing) == 22 and report.unexpected == ()


def test_state_dict_checked(tmp_path):
    model = on_meta()
    report = load_state_dict_checked(model, reference().state_dict(), dtype_for=lambda k: torch.bfloat16)
    assert report.tensors == len(model.state_dict())
    assert model.head.weight.dtype == torch.bfloat16
    sd = reference().state_dict()
    sd.pop("head.bias")
    with pytest.raises(WeightsMismatchError, match=r"1 missing \(head.bias\)"):
        load_state_dict_checked(on_meta(), sd, source="infinitystar_videovae.pth")


def test_pth_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"vae": {"w": torch.ones(2)}, "extra": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"Refusing to load evil.pth.*posix.system"):
        load_torch_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError):
        convert_pth_to_safetensors(tmp_path / "evil.pth", tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_pth_formats_and_keys(tmp_path):
    sd = {"encoder.w": torch.arange(6.0).reshape(2, 3), "quantizer.lfq_detail.mask": torch.arange(4)}
    torch.save({"vae": sd, "ema": sd}, tmp_path / "zip.pth")
    torch.save({"vae": sd}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("zip.pth", "legacy.pth"):
        loaded = load_torch_checkpoint(tmp_path / name)
        assert set(loaded) == set(sd) and torch.equal(loaded["encoder.w"], sd["encoder.w"])
    with pytest.raises(WeightsError, match=r"has no 'model' entry \(it has: vae, ema\)"):
        load_torch_checkpoint(tmp_path / "zip.pth", key="model")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "zip.pth").read_bytes()[:200])
    with pytest.raises(WeightsError, match="cut.pth is truncated or not a PyTorch checkpoint"):
        load_torch_checkpoint(tmp_path / "cut.pth")


def test_convert_pth_once(tmp_path):
    w = torch.arange(12.0).reshape(3, 4)
    torch.save({"vae": {"a": w, "a_view": w[1:], "b": torch.ones(2, dtype=torch.int64)}}, tmp_path / "vae.pth")
    out = convert_pth_to_safetensors(tmp_path / "vae.pth", tmp_path / "cache" / "vae.safetensors")
    from safetensors.torch import load_file

    loaded = load_file(out)
    assert torch.equal(loaded["a_view"], w[1:]) and loaded["b"].dtype == torch.int64
    stamp = out.stat().st_mtime_ns
    assert convert_pth_to_safetensors(tmp_path / "vae.pth", out) == out
    assert out.stat().st_mtime_ns == stamp  # cached: not rewritten


@dataclasses.dataclass(frozen=True)
class Arch:
    depth: int = 36
    heads: int = 32
    norm_eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class PresetLike:
    name: str = "720p"
    transformer: Arch = Arch()
    scales: tuple[int, ...] = (1, 2, 4)
    mode: Literal["a", "b"] = "a"
    tau: Optional[float] = None


def test_overrides_validated_and_applied(tmp_path):
    assert read_model_overrides(tmp_path, PresetLike) == {}
    (tmp_path / "infinistar.json").write_text('{"transformer": {"depth": 2, "norm_eps": 1}, "scales": [1, 3], "tau": 0.5}')
    overrides = read_model_overrides(tmp_path, PresetLike)
    assert overrides == {"transformer": {"depth": 2, "norm_eps": 1.0}, "scales": (1, 3), "tau": 0.5}
    preset = apply_overrides(PresetLike(), overrides)
    assert preset == PresetLike(transformer=Arch(depth=2, norm_eps=1.0), scales=(1, 3), tau=0.5)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"transformer": {"dept": 2}}', "unknown field 'dept'"),
        ('{"colour": 1}', "unknown field 'colour'"),
        ('{"transformer": {"depth": "2"}}', "expected int"),
        ('{"mode": "c"}', "is not one of"),
        ('{"scales": 3}', "expected a list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_overrides_errors(tmp_path, text, message):
    (tmp_path / "infinistar.json").write_text(text)
    with pytest.raises(WeightsError, match=message):
        read_model_overrides(tmp_path, PresetLike)
