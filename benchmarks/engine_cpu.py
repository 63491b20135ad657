"""Engine speed on the CPU at a mid-size config, as ratios that carry over between machines.

Builds a scaled-down InfinityStar (default 6 layers, width 768, GQA 12/3 heads of 64, SwiGLU 4x)
with random weights, a reduced two-clip schedule (largest scale 4x12x16 latent cells = 192x256
pixels, 17 frames) and the tiny VAE decoder (--vae released for the real widths), then runs it
through `engine.measure.bench.measure` (the pipeline itself, timed by its events) and prints:

  engine / matmul   the FLOP/s of sampling divided by the FLOP/s the very same GEMMs reach as
                    plain torch.matmul calls on this machine (every projection, MLP and attention
                    product of every step, each shape timed alone): 1.0 means no overhead at all.
  MFU               sampling FLOP/s / the best of two plain matmuls, the model's largest MLP GEMM
                    and 1024^3 (what `infinistar bench` prints on a CPU).
  stage shares      warm seconds of text encoding, sampling, decoding and MP4 writing / their sum.

The text encoder is the tiny byte-level T5 (the real one is Flan-T5-XL), so its share is a floor.

    PYTHONPATH=. python3 benchmarks/engine_cpu.py --threads 1      # about a minute on one core
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import presets  # noqa: E402
from engine.measure.bench import BenchSpec, generation_cost_for, measure  # noqa: E402
from engine.measure.bench_report import Load  # noqa: E402
from engine.measure.clocks import MemoryProbe  # noqa: E402
from engine.measure.random_weights import random_components  # noqa: E402
from engine.measure.costs import GenerationCost  # noqa: E402
from engine.generate.pipeline import Pipeline  # noqa: E402
from engine.presets import Preset, ScheduleConfig, TransformerConfig  # noqa: E402
from engine.model.schedule import build_schedule  # noqa: E402


def mid_preset(depth: int, width: int, heads: int, kv_heads: int, vae: str) -> Preset:
    tiny = presets.get("tiny")
    transformer = TransformerConfig(depth=depth, block_chunks=1, embed_dim=width, num_heads=heads,
                                    num_kv_heads=kv_heads, mlp_hidden=4 * width, text_channels=48)
    schedule = ScheduleConfig(
        pn="0.06M", video_frames=17, frames_inner_clip=4,
        base_scales=((1, 1), (2, 2), (3, 4), (4, 6), (6, 8), (8, 11), (10, 14), (12, 16)),
        image_rep=(2, 2, 2, 2, 2, 2, 1, 1), video_rep=(2, 2, 2, 2, 2, 1, 1, 1),
        semantic_scales=4, detail_scale_min_tokens=48,
    )
    return replace(tiny, name="mid-cpu", transformer=transformer, schedule=schedule, vae=presets.VAE_CONFIGS[vae],
                   description="benchmarks/engine_cpu.py mid-size config")


def _matmul_seconds(shape: tuple[int, ...], cache: dict, samples: int = 3) -> float:
    """Seconds of one torch.matmul of [b, m, k] @ [b, k, n] (b may be 1): best of `samples` timed
    groups, each repeating the call until it lasts >= 2 ms."""
    if shape not in cache:
        b, m, k, n = shape
        x, y = torch.randn(b, m, k), torch.randn(b, k, n)
        torch.matmul(x, y)
        best, group, done = float("inf"), 1, 0
        while done < samples:
            start = time.perf_counter()
            for _ in range(group):
                torch.matmul(x, y)
            took = time.perf_counter() - start
            if took < 2e-3:
                group *= 2
                continue
            done += 1
            best = min(best, took / group)
        cache[shape] = best
    return cache[shape]


def gemm_seconds(config: TransformerConfig, cost: GenerationCost) -> float:
    """Time the GEMMs of a whole generation take as plain matmuls (projections, MLP, attention)."""
    c, dh = config.embed_dim, config.head_dim
    q_width, kv_width = config.num_heads * dh, config.num_kv_heads * dh
    cache: dict = {}

    def layer(rows: int, queries: int, keys: int) -> float:
        t = sum(_matmul_seconds((1, rows, c, n), cache) for n in (q_width, kv_width, kv_width, 2 * config.mlp_hidden))
        t += _matmul_seconds((1, rows, q_width, c), cache) + _matmul_seconds((1, rows, config.mlp_hidden, c), cache)
        heads = cost.batch * config.num_heads
        t += _matmul_seconds((heads, queries, dh, keys), cache) + _matmul_seconds((heads, queries, keys, dh), cache)
        return t

    text = cost.text_tokens
    total = config.depth * layer(cost.batch * text, text, text)
    for step in cost.steps:
        total += config.depth * layer(cost.batch * step.query_tokens, step.query_tokens, step.key_tokens)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--vae", choices=("released", "tiny"), default="tiny",
                        help="VAE decoder width: tiny (default, fast) or released (decode takes minutes)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the full bench report")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = mid_preset(args.depth, args.width, args.heads, args.kv_heads, args.vae)
    schedule = build_schedule(preset, 17)
    device = torch.device("cpu")
    memory = MemoryProbe(device)
    memory.reset()
    start = time.perf_counter()
    pipeline = Pipeline(random_components(preset, device))
    load = Load(time.perf_counter() - start, memory.peak_bytes(), random_weights=True)
    spec = BenchSpec(model=preset.name, device="cpu", warmup=args.warmup, repeat=args.repeat)
    report = measure(pipeline, spec, load, memory, on_message=lambda m: print(m, file=sys.stderr))

    cost, _, _ = generation_cost_for(preset, spec, report.analytic.text_tokens)
    ideal = gemm_seconds(preset.transformer, cost)
    s, env = report.sampling, report.environment
    warm = report.warm
    stage_total = sum(v.seconds for v in warm.values())
    h, w = schedule.pixel_size
    print(f"config: depth {args.depth}, width {args.width}, heads {args.heads}/{args.kv_heads}, "
          f"{w}x{h} px, {schedule.num_frames} frames, {s.steps} steps, VAE {args.vae}")
    print(f"machine: {env.device_name}, torch {env.torch}, {env.threads} threads on {env.cpu_count} "
          f"cores, load average {list(env.load_average_before or [])} before / {list(env.load_average or [])} after")
    print(f"sampling: {s.seconds:.2f} s, {s.flops_per_second / 1e9:.1f} GFLOP/s, "
          f"{s.tokens_per_second:.0f} tokens/s, {s.steps_per_second:.2f} steps/s")
    print(f"same GEMMs as plain torch.matmul: {ideal:.2f} s ({cost.flops / ideal / 1e9:.1f} GFLOP/s)")
    print(f"engine / matmul (FLOP/s ratio) = {ideal / s.seconds:.3f}")
    peak = report.peak_flops
    print(f"MFU = {s.mfu:.3f} of {peak.value / 1e9:.1f} GFLOP/s ({peak.source}: "
          f"{list(peak.matmul_shape)} {peak.matmul_probe / 1e9:.1f}, "
          f"{list(peak.matmul_large_shape)} {peak.matmul_probe_large / 1e9:.1f} GFLOP/s)")
    shares = ", ".join(f"{k} {v.seconds / stage_total:.3f}" for k, v in warm.items())
    print(f"stage shares (warm, of {stage_total:.2f} s): {shares}; model build {load.seconds:.2f} s")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if args.json:
        print(json.dumps(report.to_dict(), default=str))


if __name__ == "__main__":
    main()
