"""Every GPU path of the engine in one command, measured into one JSON file (issue 16).

On a CUDA machine (about 8 minutes on one H100/H200-class GPU; `--budget` skips what is left):

  1. parity: the golden tiny transformer and VAE in fp32 on the GPU (TF32 off) against the CPU
     golden fixtures: forced-bit logits and P(bit), the summed latent, decoded pixels, and the
     uint8 frames of the same decode on the CPU. Free sampling is not compared bit for bit: the
     GPU's random generator draws other numbers than the CPU's from the same seed.
  2. 720p 5 s with the 8B architecture: random weights built on the meta device and materialised
     on the GPU (blocks bf16), one warm-up run, then the measured one.
  3. 480p 10 s (one run: the cold figures).
  4. every --offload x --weights mode at 480p 5 s (one run each).
  5. 720p 5 s with --compile: the warm-up run compiles (its time is the cold figure).

Steps are reduced: every scale runs once (max_repeat_times 1: 30 steps at 720p 5 s, 28 at 480p
5 s, 42 at 480p 10 s, instead of the released 85 / 81 / 120), which keeps every scale's shape and
the KV-cache pattern. Each case records per-stage seconds and peak memory (cuda max_memory_allocated, reset
per stage), steps/s, the SDPA kernel used, and engine.measure.memory's estimate of each phase.

    python benchmarks/gpu_check.py --out gpu_check.json      # CUDA
    python benchmarks/gpu_check.py --smoke --out smoke.json  # CPU, small configs, same code paths

`--smoke` runs the same code on the CPU with an 8B-shaped model shrunk to a few channels, the
tiny schedule, offloading through the same Offloader (engine.checkpoints.offload.build) and compilation with
the "eager" backend (no C++ toolchain needed); CI runs it (tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # golden_utils: the fixtures' own model configuration

from engine import presets  # noqa: E402
from engine.measure import memory
from engine.checkpoints import offload, speed
from engine.model import eight_bit
from engine.measure.bench import BenchSpec, measure  # noqa: E402
from engine.measure.bench_report import Load  # noqa: E402
from engine.measure.clocks import MemoryProbe  # noqa: E402
from engine.measure.random_weights import random_components  # noqa: E402
from engine.generate.pipeline import Pipeline  # noqa: E402
from engine.presets import Preset, TransformerConfig  # noqa: E402
from engine.generate.sampling import TextCondition, sample_latent  # noqa: E402
from engine.model.schedule import build_schedule  # noqa: E402
from engine.model.transformer import InfinityTransformer  # noqa: E402
from engine.model.vae import VideoVAE, pixels_to_uint8, vae_config  # noqa: E402
from golden_utils import GOLDEN_PRESET, GOLDEN_SAMPLING  # noqa: E402

GOLDEN = ROOT / "tests" / "fixtures" / "golden"
PHASES = {"encode": "encode_text", "sample": "sample", "decode": "decode"}  # estimate -> bench stage


def reduced(preset: Preset, name: str | None = None) -> Preset:
    """The preset with every scale run once (the reduced step count of this check)."""
    return replace(preset, name=name or preset.name, sampling=replace(preset.sampling, max_repeat_times=1))


def smoke_preset(base: str) -> Preset:
    """An 8B-shaped preset (chunks, GQA, flan-sized text table) shrunk to run on a CPU in seconds."""
    tiny = presets.get("tiny")
    cfg = TransformerConfig(depth=4, block_chunks=2, embed_dim=64, num_heads=4, num_kv_heads=2, mlp_hidden=128,
                            text_channels=tiny.transformer.text_channels)
    return reduced(replace(tiny, transformer=cfg, sampling=presets.get(base).sampling), f"{base}-smoke")


# ---------------------------------------------------------------------------------- parity


def parity(device: torch.device) -> dict:
    """The golden tiny model in fp32 on `device` against the CPU fixtures (see the docstring)."""
    if device.type != "cuda":
        return _parity(device)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return _parity(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _parity(device: torch.device) -> dict:
    g = load_file(GOLDEN / "infer_t2i_fp32attn.safetensors")
    model = InfinityTransformer(GOLDEN_PRESET.transformer)
    model.load_state_dict(load_file(GOLDEN / "tiny_transformer.safetensors"), strict=True)
    model = model.to(device).eval().requires_grad_(False)
    forced = [g[f"bits.{i:02d}"] for i in range(8)]
    out = sample_latent(model, build_schedule(GOLDEN_PRESET, 1), TextCondition(g["text_kv"].to(device)), GOLDEN_SAMPLING,
                        torch.Generator(device=device).manual_seed(7), forced_bits=forced, forced_scales=4,
                        trace=True)
    logits = max(float((s.raw_logits.cpu() - g[f"raw_logits.{i:02d}"]).abs().max()) for i, s in enumerate(out.trace))
    p1 = max(float((s.p1.cpu() - g[f"p1.{i:02d}"]).abs().max()) for i, s in enumerate(out.trace))
    latent = float((out.latent.cpu() - g["summed_codes"]).abs().max())

    dec = load_file(GOLDEN / "vae_decode.safetensors")
    vae = VideoVAE(vae_config("golden"))
    vae.load_official_state_dict(load_file(GOLDEN / "tiny_vae.safetensors"))
    vae = vae.eval().requires_grad_(False)
    cpu_pixels = vae.decode(dec["z_t5"])
    pixels = vae.to(device).decode(dec["z_t5"].to(device)).cpu()
    pixel_diff = float((pixels - dec["pixels_t5"]).abs().max())
    levels = int((pixels_to_uint8(pixels).int() - pixels_to_uint8(cpu_pixels).int()).abs().max())
    # The golden tests' tolerances. A pixel 1e-6 off can still cross a uint8 truncation boundary,
    # so the frames may differ from the CPU's by 1 level where the pixels agree to 1e-5.
    ok = logits <= 1e-4 and p1 <= 1e-4 and latent <= 1e-6 and pixel_diff <= 1e-5 and levels <= 1
    return {"device": str(device), "dtype": "float32", "tf32": False, "ok": ok,
            "max_abs_diff": {"raw_logits": logits, "p1": p1, "summed_codes": latent, "pixels": pixel_diff},
            "tolerance": {"raw_logits": 1e-4, "p1": 1e-4, "summed_codes": 1e-6, "pixels": 1e-5},
            "frames_max_level_diff_vs_cpu": levels, "frames_identical_to_cpu": levels == 0}


# ---------------------------------------------------------------------------------- model cases


def build(preset: Preset, device: torch.device, offload_mode: str, weights: str, compile_: bool,
          smoke: bool) -> tuple[Pipeline, float]:
    """Random-weight components in the deployed layout: built on meta, materialised on `device`
    (blocks bf16 on CUDA), quantized there, then moved home to the CPU when offloading."""
    start = time.perf_counter()
    c = random_components(preset, device)
    if weights != "bf16":
        eight_bit.quantize_transformer(c.transformer, weights, device, dtype=c.transformer.block_dtype)
    offloader = None
    if offload_mode != "none":
        if device.type == "cuda":
            for module in (c.transformer, c.vae, c.text.model):
                module.to("cpu")
            offloader = offload.attach(offload_mode, device, c.transformer, c.text.model, c.vae)
        else:  # nothing to offload to on a CPU: the same Offloader, run between two CPU homes
            offloader = offload.build(offload_mode, device, c.transformer, c.text.model, c.vae)
    if compile_:
        speed.compile_blocks(c.transformer, backend="eager" if smoke else "inductor")
    c = replace(c, offload=offload_mode, weights=weights, offloader=offloader, compiled=compile_)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Pipeline(c), time.perf_counter() - start


def run_case(name: str, preset: Preset, seconds: int, device: torch.device, offload_mode: str = "none",
             weights: str = "bf16", compile_: bool = False, warmup: int = 1, smoke: bool = False) -> dict:
    probe = MemoryProbe(device)
    pipeline, built = build(preset, device, offload_mode, weights, compile_, smoke)
    spec = BenchSpec(model=preset.name, device=str(device), seconds=seconds, warmup=warmup, repeat=1)
    report = measure(pipeline, spec, Load(built, probe.peak_bytes(), random_weights=True), probe)
    warm, sampling, analytic = report.warm, report.sampling, report.analytic
    estimate = memory.estimate(preset, analytic.frames, offload_mode, weights)
    phases = {}
    for phase, stage in PHASES.items():
        measured = warm[stage].peak_memory_bytes
        phases[phase] = {"measured_bytes": measured, "estimated_bytes": estimate.phases[phase],
                         "measured_over_estimate": measured / estimate.phases[phase]}
    out = {
        "case": name, "preset": preset.name, "seconds_of_video": seconds, "frames": analytic.frames,
        "pixel_size": [analytic.height, analytic.width],
        "offload": offload_mode, "weights": weights, "compile": compile_,
        "steps": sampling.steps, "steps_per_second": sampling.steps_per_second,
        "tokens_per_second": sampling.tokens_per_second, "mfu": sampling.mfu,
        "build_seconds": built, "stage_seconds": {k: v.seconds for k, v in warm.items()},
        "cold_stage_seconds": {k: v.seconds for k, v in report.cold.items()},
        "warm_includes_cold_run": report.warm_includes_cold_run,
        "peak_memory": phases, "estimated_peak_bytes": estimate.peak,
        "sdpa_kernel": report.environment.attention.kernel,
        "block_dtype": report.environment.dtype,
    }
    del pipeline
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def plan(smoke: bool) -> list[dict]:
    """The cases in the order they run (most important first: `--budget` cuts the tail)."""
    p720 = smoke_preset("720p") if smoke else reduced(presets.get("720p"))
    p480 = smoke_preset("480p") if smoke else reduced(presets.get("480p"))
    five, ten = (1, 2) if smoke else (5, 10)  # the smoke presets' 17 and 33 frames stand in
    warm = 0 if smoke else 1  # the smoke's figures mean nothing; it only has to run every path
    cases = [dict(name="720p 5s", preset=p720, seconds=five, warmup=warm),
             dict(name="480p 10s", preset=p480, seconds=ten, warmup=0)]
    for w in eight_bit.WEIGHT_MODES:
        for o in offload.OFFLOAD_MODES:
            cases.append(dict(name=f"480p 5s offload {o} weights {w}", preset=p480, seconds=five,
                              offload_mode=o, weights=w, warmup=0))
    # Its warm-up run compiles (reported as the cold run); compare it with the first case.
    cases.append(dict(name="720p 5s compiled", preset=p720, seconds=five, compile_=True))
    return cases


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "device": str(device), "cuda": torch.version.cuda,
           "load_average": [round(x, 2) for x in os.getloadavg()], "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, memory_bytes=props.total_memory,
                   flash_sdp=torch.backends.cuda.flash_sdp_enabled(),
                   mem_efficient_sdp=torch.backends.cuda.mem_efficient_sdp_enabled())
    return env


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="run on the CPU with small configs (CI)")
    parser.add_argument("--out", type=Path, help="JSON file to write [default: gpu_check.json; smoke: stdout]")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds after which the remaining model cases are skipped [450]")
    parser.add_argument("--only", metavar="TEXT", help="run only the model cases whose name contains TEXT")
    args = parser.parse_args()
    if args.smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; run with --smoke to check the code paths on the CPU", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    start = time.perf_counter()
    out = args.out or (None if args.smoke else Path("gpu_check.json"))
    result = {"check": "benchmarks/gpu_check.py", "smoke": args.smoke, "environment": environment(device),
              "reduced_steps": "every scale once (max_repeat_times 1)", "cases": []}
    try:
        result["parity"] = parity(device)
    except Exception as error:  # the model cases' figures are still worth having
        result["parity"] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    print(f"parity ok: {result['parity']['ok']}", file=sys.stderr)
    for case in plan(args.smoke):
        name = case.pop("name")
        if args.only and args.only not in name:
            continue
        if time.perf_counter() - start > args.budget:
            result["cases"].append({"case": name, "skipped": f"time budget of {args.budget:.0f} s spent"})
            continue
        print(f"{name} ...", file=sys.stderr)
        try:
            result["cases"].append(run_case(name, device=device, smoke=args.smoke, **case))
        except Exception as error:  # one failing mode must not hide the others' figures
            result["cases"].append({"case": name, "error": f"{type(error).__name__}: {error}"})
        if out:  # what was measured so far survives a run stopped at its time limit
            write_atomic(out, {**result, "seconds": time.perf_counter() - start, "ok": None})
    result["seconds"] = time.perf_counter() - start
    failed = not result["parity"]["ok"] or any("error" in c for c in result["cases"])
    result["ok"] = not failed
    if out:
        write_atomic(out, result)
    else:
        print(json.dumps(result, indent=1, default=str))
    print(f"gpu_check: {'ok' if not failed else 'FAILED'} in {result['seconds']:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
