"""Whole-pipeline CPU speed of a mid-size InfinityStar, per stage, optionally against another revision.

The model (issue 16): depth 8 (2 chunks x 4), width 512, 8 heads / 2 K/V heads, SwiGLU 1536, a
2-layer T5 of width 64 (prompts padded to 512 tokens, like Flan-T5-XL), VAE widths
16-32-64-64-64, 128x192 px, image + 2 clips of 4 latent frames (33 frames), pyramid
(1,1)(2,2)(3,5)(4,6)(6,9)(8,12), repetitions image [3]*6 / video [3,3,3,3,2,1] = 48 steps, APG.
Random weights from a fixed seed, built by this script (the same numbers in every checkout).

Every checkout runs in its own worker process, which builds the model once, warms up, then
runs the pipeline (text, sampling, decode, MP4 write into a temp dir) whenever the parent asks.
With `--against REV` a second worker runs a `git worktree` of REV (in a temp dir, removed
afterwards) and the two are interleaved run by run (ABBA order), so a noisy shared machine slows
both alike; the report is the median seconds per stage and their ratio (this / REV), for wall
seconds and for the CPU seconds the worker used (all threads: on a machine shared with other work
the steadier figure). Peak RSS is each worker's VmHWM, reset before every run; `frames max |diff|`
compares the two outputs' uint8 frames.

    python benchmarks/pipeline_cpu.py --against 38e83a2 --threads 1
    python benchmarks/pipeline_cpu.py --against 38e83a2 --threads 2 --dtype bf16
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("text", "sample", "decode", "write")
TAG = "@@bench "  # worker -> parent lines; anything else a worker prints is passed through
PROMPT = "a red fox running through fresh snow at golden hour, cinematic"


# ---------------------------------------------------------------------------------- worker side
# Runs with sys.path[0] = the checkout under test, so it may only use engine APIs that exist in
# every revision it is pointed at (those of 38e83a2 and later).


def _init_random(module, generator) -> None:
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif p.ndim == 1 or leaf == "gamma":
                p.fill_(1.0)
            else:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=generator)


def _engine_module(path: str):
    """`engine.<path>` in this layout, or the flat module of the same concept in older checkouts
    (before the sub-packages: engine.loading, engine.text, engine.pipeline, ...)."""
    import importlib

    try:
        return importlib.import_module(f"engine.{path}")
    except ModuleNotFoundError:
        flat = {"model.text_encoder": "text"}.get(path, path.rsplit(".", 1)[-1])
        return importlib.import_module(f"engine.{flat}")


def build_components(seed: int):
    import torch
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from engine.presets import Preset, SamplingConfig, ScheduleConfig, TransformerConfig

    Components = _engine_module("checkpoints.loading").Components
    TextEncoder = _engine_module("model.text_encoder").TextEncoder
    InfinityTransformer = _engine_module("model.transformer").InfinityTransformer
    vae_module = _engine_module("model.vae")
    VAEConfig, VideoVAE = vae_module.VAEConfig, vae_module.VideoVAE

    transformer_cfg = TransformerConfig(depth=8, block_chunks=2, embed_dim=512, num_heads=8, num_kv_heads=2,
                                        mlp_hidden=1536, text_channels=64)
    schedule = ScheduleConfig(
        pn="0.06M", video_frames=33, frames_inner_clip=4,
        base_scales=((1, 1), (2, 2), (3, 5), (4, 6), (6, 9), (8, 12)),
        image_rep=(3,) * 6, video_rep=(3, 3, 3, 3, 2, 1), semantic_scales=3, detail_scale_min_tokens=20,
    )
    vae_cfg = VAEConfig(name="bench-cpu", block_out_channels=(16, 32, 64, 64, 64))
    preset = Preset(name="bench-cpu", transformer=transformer_cfg, schedule=schedule, sampling=SamplingConfig(),
                    vae=vae_cfg, text_encoder="bench-cpu", fps=16, frames=(33,), checkpoint_dir="none",
                    description="benchmarks/pipeline_cpu.py")
    generator = torch.Generator().manual_seed(seed)
    transformer = InfinityTransformer(transformer_cfg)
    _init_random(transformer, generator)
    transformer = transformer.to_inference_dtype("cpu")
    vae = VideoVAE(vae_cfg)
    _init_random(vae, generator)
    vae = vae.eval().requires_grad_(False)
    tokenizer = ByT5Tokenizer(extra_ids=0)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                 num_heads=4, feed_forward_proj="gated-gelu"))
    _init_random(t5, generator)
    text = TextEncoder(tokenizer, t5, 512)
    return Components(preset, transformer, vae, text, torch.device("cpu"), "random weights")


def _vmhwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


class Clock:
    """Stage boundaries from the pipeline's own events."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[float, float]] = {}

    def __call__(self, event) -> None:
        key = f"{event.stage}:{'start' if event.done == 0 else 'end' if event.done >= event.total else 'mid'}"
        if key.endswith(":start") or key.endswith(":end"):
            self.marks.setdefault(key, now())


def run_once(pipeline, request, out_dir: Path, frames_file: Path | None) -> dict:
    import torch

    video_io = _engine_module("media.video_io")

    _reset_peak()
    clock = Clock()
    start = now()
    result = pipeline.run(request, on_event=clock)
    written = now()
    path = video_io.write_result(result, out_dir / "bench.mp4", overwrite=True)
    end = now()
    m = clock.marks
    spans = {"text": (m["encode_text:start"], m["encode_text:end"]),
             "sample": (m["encode_text:end"], m["decode:start"]),
             "decode": (m["decode:start"], m["decode:end"]), "write": (written, end), "total": (start, end)}
    stages = {k: b[0] - a[0] for k, (a, b) in spans.items()}
    cpu = {k: b[1] - a[1] for k, (a, b) in spans.items()}
    if frames_file is not None:
        torch.save(torch.as_tensor(result.frames), frames_file)
    for leftover in out_dir.iterdir():
        leftover.unlink()
    assert path is not None
    return {"stages": stages, "cpu": cpu, "peak_rss": _vmhwm(),
            "dtype": result.metadata.get("dtype"), "steps": result.metadata.get("steps")}


def configure(components, dtype: str, weights: str, compile_: bool):
    """Non-default speed options: only checkouts that have them (engine.checkpoints.speed) get asked."""
    if dtype == "fp32" and weights == "bf16" and not compile_:
        return components
    from engine.checkpoints import speed

    return speed.configure(components, dtype=dtype, weights=weights, compile=compile_)


def worker(args: argparse.Namespace) -> None:
    root = Path(args.worker).resolve()
    sys.path.insert(0, str(root))
    import torch

    import engine
    from engine.request import GenerationRequest

    Pipeline = engine.Pipeline

    if not Path(engine.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"worker for {root} imported {engine.__file__}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipeline = Pipeline(configure(build_components(args.seed), args.dtype, args.weights, args.compile))
    build = time.perf_counter() - start
    request = GenerationRequest(mode="t2v", prompt=PROMPT, seed=args.seed, seconds=2)
    out_dir = Path(tempfile.mkdtemp(prefix="pipeline-cpu-"))
    try:
        warm = [run_once(pipeline, request, out_dir, None) for _ in range(args.warmup)]
        print(TAG + json.dumps({"ready": True, "build_seconds": build, "warmup": warm}), flush=True)
        for line in sys.stdin:
            order = json.loads(line)
            if order.get("quit"):
                break
            frames = Path(order["frames"]) if order.get("frames") else None
            print(TAG + json.dumps(run_once(pipeline, request, out_dir, frames)), flush=True)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------- parent side


class Worker:
    def __init__(self, label: str, root: Path, args: argparse.Namespace, options: list[str]) -> None:
        self.label, self.root = label, root
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(root), "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--seed", str(args.seed), *options]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        self.ready = self.read()
        self.runs: list[dict] = []

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
            sys.stderr.write(f"[{self.label}] {line}")
        raise SystemExit(f"{self.label} worker ended early (exit {self.proc.wait()})")

    def run(self, frames: Path | None) -> dict:
        self.proc.stdin.write(json.dumps({"frames": str(frames) if frames else None}) + "\n")
        self.proc.stdin.flush()
        result = self.read()
        self.runs.append(result)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
            self.proc.stdin.close()
            self.proc.wait()

    def medians(self, kind: str) -> dict:
        return {s: statistics.median(r[kind][s] for r in self.runs) for s in (*STAGES, "total")}


def add_worktree(rev: str, tmp: Path) -> Path:
    path = tmp / "against"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), rev], check=True)
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


def frames_diff(a: Path, b: Path) -> int:
    import torch

    x, y = torch.load(a), torch.load(b)
    if x.shape != y.shape:
        return -1
    return int((x.int() - y.int()).abs().max())


def report(workers: list[Worker], args: argparse.Namespace, load: tuple, diff: int | None) -> dict:
    pair = len(workers) == 2
    peak = [max(r["peak_rss"] for r in w.runs) for w in workers]
    print(f"\nthreads {args.threads}, {args.runs} interleaved runs each after {args.warmup} warm-up, "
          f"options: dtype {args.dtype}, weights {args.weights}, compile {args.compile}")
    print(f"load average {load[0]} before / {load[1]} after, {os.cpu_count()} cores; "
          f"dtype used: {', '.join(str(w.runs[0]['dtype']) for w in workers)}")
    out = {"threads": args.threads, "runs": args.runs, "load_average": load,
           "options": {"dtype": args.dtype, "weights": args.weights, "compile": args.compile},
           "workers": {w.label: {"root": str(w.root), "peak_rss": p, "runs": w.runs} for w, p in zip(workers, peak)},
           "frames_max_diff": diff}
    for kind, title in (("stages", "wall s"), ("cpu", "CPU s")):
        med = [w.medians(kind) for w in workers]
        print(f"{'median ' + title:<18}" + "".join(f"{w.label:>14}" for w in workers) + ("        ratio" if pair else ""))
        for key in (*STAGES, "total"):
            line = f"{key:<18}" + "".join(f"{m[key]:>14.3f}" for m in med)
            if pair:
                out.setdefault(f"ratios_{kind}", {})[key] = med[0][key] / med[1][key]
                line += f"{med[0][key] / med[1][key]:>13.3f}"
            print(line)
        for w, m in zip(workers, med):
            out["workers"][w.label][f"medians_{kind}"] = m
    line = f"{'peak RSS (MiB)':<18}" + "".join(f"{p / 2**20:>14.0f}" for p in peak)
    print(line + (f"{peak[0] / peak[1]:>13.3f}" if pair else ""))
    if diff is not None:
        print(f"frames max |diff| between the two outputs: {diff} levels")
    return out


def parent(args: argparse.Namespace) -> None:
    options = ["--dtype", args.dtype, "--weights", args.weights] + (["--compile"] if args.compile else [])
    load_before = [round(x, 2) for x in os.getloadavg()]
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-cpu-"))
    against = None
    workers: list[Worker] = []
    try:
        workers.append(Worker("this", ROOT, args, options))
        if args.against:
            against = add_worktree(args.against, tmp)
            workers.append(Worker(args.against[:12], against, args, []))
        for i in range(args.runs):
            order = workers if i % 2 == 0 else workers[::-1]
            for w in order:
                w.run(tmp / f"{w.label}.pt" if i == 0 else None)
                print(f"run {i + 1}/{args.runs} {w.label}: {w.runs[-1]['stages']['total']:.2f} s", file=sys.stderr)
        diff = frames_diff(tmp / "this.pt", tmp / f"{workers[1].label}.pt") if len(workers) == 2 else None
        load_after = [round(x, 2) for x in os.getloadavg()]
        out = report(workers, args, (load_before, load_after), diff)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    finally:
        for w in workers:
            w.close()
        if against is not None:
            remove_worktree(against)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="git revision to compare with (run from a worktree)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker [1]")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per checkout [5]")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs per checkout [1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="compute dtype of this checkout's blocks [fp32]")
    parser.add_argument("--weights", choices=("bf16", "int8"), default="bf16",
                        help="this checkout's block weights: bf16 = the float path, int8 [bf16]")
    parser.add_argument("--compile", action="store_true", help="this checkout with torch.compile'd blocks")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--threads and --runs must be at least 1, --warmup at least 0")
    if args.worker:
        worker(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
