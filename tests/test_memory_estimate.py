"""engine.measure.memory (the analytic GPU memory estimate) and the CLI's --offload/--weights/--dry-run."""
import json
from pathlib import Path

import pytest
import torch

from cli_fakes import error_line, invoke
from engine import presets
from engine.measure import memory
from engine.model import eight_bit
from engine.model.schedule import build_schedule, kv_cache_elements
from golden_utils import GOLDEN_PRESET, tiny_model

GIB = 2**30


def test_transformer_bytes_match_the_modules():
    cfg = GOLDEN_PRESET.transformer
    model = tiny_model()
    block, rest = memory.transformer_bytes(cfg, "bf16")
    blocks = model.layers()
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    assert rest == sum(p.numel() * 4 for p in model.parameters() if id(p) not in in_blocks)
    assert block == sum(p.numel() * 2 for p in blocks[0].parameters())  # bf16 on CUDA
    eight_bit.quantize_transformer(model, "int8", "cpu", torch.bfloat16)
    stored = sum(t.numel() * t.element_size() for t in (*blocks[0].parameters(), *blocks[0].buffers()))
    assert memory.transformer_bytes(cfg, "int8")[0] == stored == memory.transformer_bytes(cfg, "fp8")[0]


def test_text_encoder_parameter_counts():
    from transformers import T5Config, T5EncoderModel

    from engine.model.text_encoder import TextEncoder

    d, ff, layers, heads, d_kv, vocab = memory.TEXT_ENCODERS["flan-t5-xl"]
    with torch.device("meta"):
        t5 = T5EncoderModel(T5Config(vocab_size=vocab, d_model=d, d_kv=d_kv, d_ff=ff, num_layers=layers,
                                     num_heads=heads, feed_forward_proj="gated-gelu"))
    assert memory.text_encoder_params("flan-t5-xl") == sum(p.numel() for p in t5.parameters()) == 1_223_527_424
    tiny = TextEncoder.tiny().model
    assert memory.text_encoder_params("tiny") == sum(p.numel() for p in tiny.parameters())


def test_estimate_parts_and_ordering():
    preset = presets.get("720p")
    every = memory.estimate_all(preset, 81)
    e = every[("model", "bf16")]
    assert e.kv_cache == kv_cache_elements(build_schedule(preset, 81), preset.transformer, text_len=512) * 2
    assert e.largest_tokens == 20 * 45 * 80 and e.pixel_size == (720, 1280)
    assert 16 * GIB < e.transformer_weights < 17 * GIB  # 8.8 B parameters, blocks in bf16
    assert every[("model", "int8")].transformer_weights < 0.51 * e.transformer_weights
    for w in eight_bit.WEIGHT_MODES:
        peaks = [every[(o, w)].phases["sample"] for o in ("none", "model", "blocks")]
        assert peaks == sorted(peaks, reverse=True)
    assert every[("blocks", "bf16")].streamed_per_step == 36 * e.block_weights
    # What the README states: int8 or block streaming brings 720p 5 s under 24 GiB.
    assert every[("none", "bf16")].peak > 24 * GIB > every[("model", "int8")].peak
    assert memory.estimate(preset, 81, guided=False).kv_cache == e.kv_cache // 2
    # A negative prompt of another length: K/V heads repeated 4x over [text | ref | new] tokens.
    masked = memory.estimate(preset, 81, "model", "bf16", negative_prompt=True)
    assert masked.sample_activations - e.sample_activations == 2 * (512 + 3600 + 72000) * 2 * 4096 * 2


def test_dry_run_loads_nothing_and_prints_every_mode(fake):
    result = invoke("t2v", "--dry-run", "--offload", "model", "--weights", "int8")
    assert result.exit_code == 0, result.stderr
    assert fake.loads == []
    out = result.stdout
    assert "Estimated peak GPU memory (not measured) for 720p, 81 frames (5 s), 1280x720" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("none ", "model ", "blocks "))]
    assert [r[0] for r in rows] == ["none", "model", "blocks"] and all(len(r) == 4 for r in rows)
    assert rows[1][2].endswith("*")
    peak = memory.estimate(presets.get("720p"), 81, "model", "int8").peak
    assert f"peak {peak / GIB:.1f} GiB" in out


def test_dry_run_json_for_480p_10_s_and_images(fake):
    record = json.loads(invoke("t2v", "--dry-run", "--seconds", "10", "--json").stdout)
    assert record["measured"] is False and record["estimate"]["frames"] == 161
    assert set(record["peaks"]) == {f"{o}/{w}" for o in ("none", "model", "blocks") for w in eight_bit.WEIGHT_MODES}
    image = json.loads(invoke("t2i", "--dry-run", "--json", "--cfg", "1").stdout)["estimate"]
    assert image["frames"] == 1 and image["preset"] == "720p"
    assert fake.loads == []


def test_modes_reach_the_engine_from_flags_and_config(fake):
    result = invoke("t2v", "x", "--seed", "1", "--offload", "blocks", "--weights", "fp8")
    assert result.exit_code == 0 and " on cpu, float32, offload blocks, weights fp8" in result.stderr
    Path("c.toml").write_text('offload = "model"\n[t2i]\nweights = "int8"\n')
    assert invoke("--config", "c.toml", "t2i", "x", "--seed", "1").exit_code == 0
    assert invoke("t2v", "x", "--seed", "2").exit_code == 0
    plain = {"dtype": "auto", "compile": False}
    assert fake.load_options == [{"offload": "blocks", "weights": "fp8", **plain},
                                 {"offload": "model", "weights": "int8", **plain},
                                 {"offload": "none", "weights": "bf16", **plain}]


def test_dtype_and_compile_reach_the_engine(fake):
    result = invoke("t2v", "x", "--seed", "1", "--dtype", "bf16", "--compile")
    assert result.exit_code == 0 and "offload none, weights bf16, compiled blocks" in result.stderr
    assert fake.load_options == [{"offload": "none", "weights": "bf16", "dtype": "bf16", "compile": True}]
    assert invoke("t2v", "x", "--dtype", "fp16").exit_code == 2


@pytest.mark.parametrize("args, config, message", [
    (["--offload", "disk"], "", "Invalid value for '--offload'"),
    (["--weights", "int4"], "", "Invalid value for '--weights'"),
    ([], 'weights = "int4"\n', "key 'weights'"),
    ([], "dry-run = true\n", "unknown key 'dry-run'"),
])
def test_bad_modes_are_one_line_errors(fake, args, config, message):
    prefix = []
    if config:
        Path("c.toml").write_text(config)
        prefix = ["--config", "c.toml"]
    result = invoke(*prefix, "t2v", "x", "--seed", "1", *args)
    assert result.exit_code != 0 and message in error_line(result)
    assert fake.loads == []


def test_readme_table_is_what_the_estimator_says():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    columns = [("720p", 81), ("480p", 81), ("480p", 161), ("720p", 1)]
    every = [memory.estimate_all(presets.get(name), frames) for name, frames in columns]
    rows = [line for line in text.splitlines() if line.startswith("| `--offload")]
    assert len(rows) == 9
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        _, offload_mode, _, weights = cells[0].strip("`").split()
        for estimates, cell in zip(every, cells[1:]):
            peak = estimates[(offload_mode, weights)].peak / GIB
            assert cell == f"{peak:.1f}" + (" ✓" if peak <= 23 else "")
