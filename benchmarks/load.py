"""Memory and speed of loading a checkpoint in the official layout into a meta-built module.

Writes a synthetic fp32 checkpoint (6 shards + index, keys named like the official transformer,
a scaled-down width), then, each in a fresh subprocess with the shards dropped from the page
cache first (posix_fadvise DONTNEED on our own files only):
  raw   read every shard once with plain reads (the disk's speed),
  load  engine.checkpoints.weights.load_safetensors_dir into a module built on the meta device, then touch
        every parameter (tensors kept in their stored dtype stay file-backed and are read on
        first use, so the touch is part of the cost),
and prints peak RSS / checkpoint bytes (whole process, and above the RSS measured just before
loading: Python + torch) and load throughput / raw read throughput (fastest of --repeat runs).

    PYTHONPATH=. python3 benchmarks/load.py --size-gb 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNKS, PER_CHUNK = 2, 6  # 12 blocks, named block_chunks.{c}.module.{j} as in the official keys
PARAMS_PER_BLOCK = 14.5  # × dim²: q, o (dim²), k, v (dim²/4 each, 4:1 GQA), SwiGLU 3 × 4 dim²


def build_module(dim: int):
    """Transformer-like module with the official key names (Linear / RMSNorm weights)."""
    import torch
    from torch import nn

    def norm(n: int) -> nn.Module:
        m = nn.Module()
        m.weight = nn.Parameter(torch.ones(n))
        return m

    def block() -> nn.Module:
        b = nn.Module()
        b.attn = nn.Module()
        for name, out in (("q_proj", dim), ("k_proj", dim // 4), ("v_proj", dim // 4), ("o_proj", dim)):
            setattr(b.attn, name, nn.Linear(dim, out, bias=False))
        b.attn.q_norm, b.attn.k_norm = norm(128), norm(128)
        b.mlp = nn.Module()
        b.mlp.gate_proj = nn.Linear(dim, 4 * dim, bias=False)
        b.mlp.up_proj = nn.Linear(dim, 4 * dim, bias=False)
        b.mlp.down_proj = nn.Linear(4 * dim, dim, bias=False)
        b.input_layernorm, b.post_attention_layernorm = norm(dim), norm(dim)
        return b

    model = nn.Module()
    model.cfg_uncond = nn.Parameter(torch.zeros(512, 2048))
    model.text_proj = nn.Linear(2048, dim)
    model.word_embed = nn.Linear(64, dim)
    model.block_chunks = nn.ModuleList()
    for _ in range(CHUNKS):
        chunk = nn.Module()
        chunk.module = nn.ModuleList(block() for _ in range(PER_CHUNK))
        model.block_chunks.append(chunk)
    model.norm_hidden_sates = norm(dim)
    model.head = nn.Linear(dim, 128)
    return model


class _LazyStateDict(Mapping):
    """Tensors made on access, so the writer never holds the whole checkpoint."""

    def __init__(self, shapes: dict):
        self.shapes = shapes

    def __getitem__(self, key: str):
        import torch

        return torch.empty(self.shapes[key]).fill_(float(len(key) % 7) / 7)

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def write_checkpoint(folder: Path, dim: int) -> int:
    import torch

    from engine.checkpoints.weights import write_safetensors_dir

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_module(dim).state_dict().items()}
    total = sum(4 * math.prod(s) for s in shapes.values())
    paths = write_safetensors_dir(_LazyStateDict(shapes), folder, max_shard_bytes=math.ceil(total / 6))
    for path in paths:  # clean pages can be dropped from the cache, dirty ones cannot
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    return total


def drop_from_page_cache(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(mode: str, folder: Path, dim: int) -> dict:
    if mode == "raw":
        drop_from_page_cache(folder)
        buf = bytearray(64 << 20)
        start, n = time.perf_counter(), 0
        for path in sorted(folder.glob("*.safetensors")):
            with open(path, "rb", buffering=0) as f:
                while got := f.readinto(buf):
                    n += got
        return {"seconds": time.perf_counter() - start, "bytes": n}
    import torch

    from engine.checkpoints.weights import load_safetensors_dir

    with torch.device("meta"):
        model = build_module(dim)
    drop_from_page_cache(folder)
    base = rss_kib("VmRSS")
    dtype_for = (lambda k: torch.bfloat16 if k.startswith("block_chunks.") else None) if mode == "bf16" else None
    start = time.perf_counter()
    report = load_safetensors_dir(model, folder, dtype_for=dtype_for)
    loaded = time.perf_counter() - start
    with torch.no_grad():
        # one element per 4 KiB page: faults in file-backed tensors without timing arithmetic
        checksum = sum(float(p.reshape(-1)[:: 4096 // p.element_size()].float().sum()) for p in model.parameters())
    total = time.perf_counter() - start
    return {"seconds_load": loaded, "seconds": total, "bytes": report.bytes, "checksum": checksum,
            "base_kib": base, "peak_kib": rss_kib("VmHWM")}


def run_child(mode: str, folder: Path, dim: int, repeat: int) -> dict:
    """Fastest of `repeat` fresh-process runs (the machine is shared; the minimum is the least noisy)."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), str(dim)],
                             check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout))
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="checkpoint size (decimal GB)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write it (default: a temp folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is shown")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), int(args.child[2]))))
        return
    dim = max(128, round(math.sqrt(args.size_gb * 1e9 / 4 / (CHUNKS * PER_CHUNK * PARAMS_PER_BLOCK)) / 128) * 128)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp) / "infinitystar_8b_720p_weights"
        t = time.perf_counter()
        ckpt = write_checkpoint(folder, dim)
        print(f"checkpoint: {ckpt / 1e9:.2f} GB fp32, dim {dim}, 6 shards, written in {time.perf_counter() - t:.1f} s")
        raw = run_child("raw", folder, dim, args.repeat)
        raw_tp = raw["bytes"] / raw["seconds"]
        print(f"raw read:   {raw['seconds']:.2f} s  ({raw_tp / 1e9:.2f} GB/s)")
        for mode, label in (("keep", "fp32 kept"), ("bf16", "blocks→bf16")):
            r = run_child(mode, folder, dim, args.repeat)
            peak = r["peak_kib"] * 1024
            extra = (r["peak_kib"] - r["base_kib"]) * 1024
            print(f"load {label:<11}: {r['seconds_load']:.2f} s load + touch = {r['seconds']:.2f} s; "
                  f"peak RSS {peak / 1e9:.2f} GB (baseline {r['base_kib'] * 1024 / 1e9:.2f} GB)")
            print(f"  peak_rss / checkpoint_bytes = {peak / ckpt:.3f}  "
                  f"(above baseline: {extra / ckpt:.3f})")
            print(f"  load_throughput / raw_read_throughput = {(ckpt / r['seconds']) / raw_tp:.3f}")


if __name__ == "__main__":
    main()
