"""`infinistar bench` and the analytic costs: FLOPs against torch's counter, reports on the tiny model,
dry runs of the 8B presets that never build a model."""
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import engine.measure.bench as bench
import engine.measure.random_weights as random_weights
import engine.checkpoints.loading as loading
from cli_fakes import error_line, invoke
from engine import presets
from engine.measure.costs import generation_cost, parameter_count
from engine.request import Event
from engine.generate.sampling import TextCondition, sample_latent
from engine.model.schedule import build_schedule, kv_cache_elements
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE



@pytest.fixture
def nothing_built(monkeypatch):
    """Any attempt to load a model or build one off the meta device fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")

    def meta_only(cls):
        init = cls.__init__

        def checked(self, *args, **kwargs):
            if torch.get_default_device().type != "meta":
                refuse()
            init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", checked)

    meta_only(InfinityTransformer)
    meta_only(VideoVAE)
    monkeypatch.setattr(loading, "load_components", refuse)
    monkeypatch.setattr(bench, "random_components", refuse)


@pytest.mark.parametrize("frames", [1, 17])
def test_analytic_flops_equal_torch_flop_counter(frames, one_thread):
    preset = presets.get("tiny")
    model = loading.load_transformer(preset, loading.TINY_DIR / preset.checkpoint_dir, torch.device("cpu"))
    schedule = build_schedule(preset, frames)
    text = TextCondition(torch.randn(7, preset.transformer.text_channels, generator=torch.Generator().manual_seed(0)))
    # The math backend is made of matmuls the counter sees; the fused CPU kernel is not counted.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        sample_latent(model, schedule, text, preset.sampling)
    cost = generation_cost(schedule, preset.transformer, text_tokens=7, guided=True)
    assert cost.flops == counter.get_total_flops()
    assert cost.num_steps == schedule.num_steps and cost.batch == 2


@pytest.mark.parametrize("name", ["tiny", "720p"])
def test_parameter_count_matches_the_module(name):
    config = presets.get(name).transformer
    with torch.device("meta"):
        model = InfinityTransformer(config)
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())


def test_dry_run_720p_reports_the_real_schedule_without_building(clean_env, nothing_built):
    result = invoke("bench", "--random-weights", "--res", "720p", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    a = report["analytic"]
    preset = presets.get("720p")
    schedule = build_schedule(preset, 81)
    assert report["dry_run"] is True and a["preset"] == "720p"
    assert (a["frames"], a["height"], a["width"], a["steps"]) == (81, 720, 1280, schedule.num_steps)
    assert a["text_tokens"] == 512 and a["text_tokens_assumed_max"] is True
    assert a["kv_cache"]["elements"] == kv_cache_elements(schedule, preset.transformer, "minimal", 512, 2)
    assert a["kv_cache"]["bytes_bf16"] == 2 * a["kv_cache"]["elements"]
    assert a["max_query_tokens"] == 20 * 45 * 80
    flops = a["flops"]
    parts = ("projections", "attention", "mlp", "embed_and_heads", "text_prefix")
    assert flops["total"] == sum(flops[p] for p in parts) and 1e16 < flops["total"] < 1e17
    text = invoke("bench", "--res", "480p", "--seconds", "10", "--analytic", "--text-tokens", "40")
    assert text.exit_code == 0, text.stderr
    assert "3 clips" in text.stdout and "KV cache peak" in text.stdout and "40" in text.stdout


def test_random_weights_of_8b_on_cpu_is_refused_with_the_ram_needed(clean_env, nothing_built):
    line = error_line(invoke("--device", "cpu", "bench", "--res", "720p", "--random-weights"))
    assert "GiB" in line and "--force" in line and "--dry-run" in line


def test_bench_usage_errors(clean_env):
    assert "not both" in error_line(invoke("bench", "--model", "tiny", "--res", "720p"))
    assert "unknown preset" in error_line(invoke("bench", "--model", "nope", "--dry-run"))
    assert invoke("bench", "--repeat", "0").exit_code == 2


def test_stage_clock_cuts_events_into_stages_and_steps():
    device = torch.device("cpu")
    clock = bench.StageClock(device, bench.MemoryProbe(device))
    events = [Event("encode_reference", 0, 1), Event("encode_reference", 1, 1),
              Event("encode_text", 0, 1), Event("encode_text", 1, 1),
              Event("sample", 1, 3, 0, 0, 0), Event("sample", 2, 3, 0, 0, 1), Event("sample", 3, 3, 1, 1, 0),
              Event("decode", 0, 5), Event("decode", 2, 5), Event("decode", 5, 5)]
    for event in events:
        clock(event)
    assert list(clock.stages) == ["encode_reference", "encode_text", "sample", "decode"]
    assert [(s["clip"], s["scale"], s["repetition"]) for s in clock.steps] == [(0, 0, 0), (0, 0, 1), (1, 1, 0)]
    assert sum(s["seconds"] for s in clock.steps) <= clock.stages["sample"]["seconds"]
    assert all(s["peak_memory_bytes"] > 0 for s in clock.stages.values())


def test_the_machine_is_probed_once_per_device_dtype_and_shape(monkeypatch):
    import engine.measure.machine as machine

    probed = []

    def probe(*shape, **device_and_dtype) -> float:
        probed.append(shape)
        return 1e9

    monkeypatch.setattr(machine, "matmul_flops_per_second", probe)
    machine.peak_flops.cache_clear()
    cpu = torch.device("cpu")
    first = machine.peak_flops(cpu, torch.float32, (8, 16, 32))
    assert machine.peak_flops(cpu, torch.float32, (8, 16, 32)) is first and len(probed) == 2
    machine.peak_flops(cpu, torch.bfloat16, (8, 16, 32))
    machine.peak_flops(cpu, torch.float32, (4, 16, 32))
    assert len(probed) == 6 and first.value == 1e9 and first.source == "best torch.matmul probe"
    machine.peak_flops.cache_clear()


def _check_report(report: dict, mode: str) -> None:
    env = report["environment"]
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["torch"] == torch.__version__
    assert env["attention"]["backend"] == "torch sdpa" and isinstance(env["attention"]["kernel"], str)
    assert isinstance(report["load"]["seconds"], float) and report["load"]["peak_memory_bytes"] > 0
    for part in ("cold", "warm"):
        wanted = ["encode_text", "sample", "decode", "write"]
        assert list(report[part]) == (["encode_reference"] + wanted if mode == "i2v" else wanted)
        for stage in report[part].values():
            assert stage["seconds"] >= 0 and isinstance(stage["peak_memory_bytes"], int)
    s, a = report["sampling"], report["analytic"]
    assert report["mode"] == mode and s["steps"] == a["steps"]
    assert s["tokens_per_second"] > 0 and s["steps_per_second"] > 0 and 0 < s["mfu"]
    assert sum(c["steps"] for c in s["per_clip"]) == a["steps"] and s["slowest_scales"]
    assert report["peak_flops"]["value"] > 0 and isinstance(report["memory"]["attribution"], str)
    assert isinstance(report["warnings"], list)


def test_bench_tiny_json_is_one_object(clean_env):
    result = invoke("--device", "cpu", "bench", "--model", "tiny", "--mode", "t2i", "--warmup", "0",
                    "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    report = json.loads(result.stdout)
    _check_report(report, "t2i")
    assert report["load"]["random_weights"] is False and report["warm_includes_cold_run"] is True
    assert report["analytic"]["frames"] == 1 and len(report["runs"]) == 1
    assert list(clean_env.iterdir()) == []  # the written image went to a temporary folder, now gone


def test_bench_random_weights_tiny_video(clean_env):
    result = invoke("--device", "cpu", "bench", "--random-weights", "--warmup", "1", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    _check_report(report, "t2v")
    assert report["load"]["random_weights"] is True and report["warm_includes_cold_run"] is False
    assert [r["kind"] for r in report["runs"]] == ["warmup", "measured"]
    assert len(report["sampling"]["per_clip"]) == 2


def test_bench_i2v_times_the_reference_encoding(clean_env):
    result = invoke("--device", "cpu", "bench", "--model", "tiny", "--mode", "i2v", "--warmup", "0",
                    "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    _check_report(report, "i2v")
    assert report["warm"]["encode_reference"]["seconds"] > 0
    table = invoke("--device", "cpu", "bench", "--model", "tiny", "--mode", "i2v", "--warmup", "0", "--threads", "1")
    assert table.exit_code == 0 and "encode_reference" in table.stdout


def test_random_components_are_finite_and_shaped_like_the_preset():
    preset = presets.get("tiny")
    components = bench.random_components(preset, torch.device("cpu"))
    params = list(components.transformer.parameters()) + list(components.vae.parameters())
    assert all(torch.isfinite(p).all() for p in params)
    assert sum(p.numel() for p in components.transformer.parameters()) == parameter_count(preset.transformer)
    assert components.vae.quantizer.lfq_semantic.mask.tolist()[-1] == 1


def test_random_t5_encodes_bytes(monkeypatch):
    """The 8B presets' random text encoder, at a small width: a byte tokenizer feeding a T5 encoder."""
    monkeypatch.setattr(random_weights, "T5_XL", dict(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))
    encoder = random_weights.random_t5_xl(torch.device("cpu"), torch.Generator().manual_seed(0))
    (features,) = encoder.encode(["a fox"])
    assert features.shape == (len("a fox") + 1, 32) and torch.isfinite(features).all()
