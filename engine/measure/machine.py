"""Facts about the machine a bench ran on: the FLOP/s to compare with (data-sheet peaks or a
matmul probe), the attention kernel PyTorch picks, and the environment (device, threads, load)."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from engine.measure.clocks import synchronize

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched
# against torch.cuda.get_device_name() in this order (first substring found wins).
KNOWN_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
)


@dataclass(frozen=True)
class PeakFlops:
    """The FLOP/s an MFU is computed against (`value`, from `source`) and the probes behind it."""

    matmul_probe: float  # FLOP/s of a matmul of the model's representative shape
    matmul_shape: tuple[int, int, int]
    matmul_probe_large: float  # FLOP/s of a large square matmul
    matmul_large_shape: tuple[int, int, int]
    matmul_dtype: str
    value: float
    source: str


@dataclass(frozen=True)
class Attention:
    backend: str
    kernel: str  # the aten SDPA kernel(s) dispatched for the model's head layout


@dataclass(frozen=True)
class Environment:
    device: str
    device_name: str
    torch: str
    dtype: str  # the transformer blocks' dtype
    attention: Attention
    threads: int
    cpu_count: Optional[int]
    load_average: Optional[tuple[float, ...]]  # 1/5/15 min, at the end of the bench
    load_average_before: Optional[tuple[float, ...]]  # at its start


def matmul_flops_per_second(m: int, k: int, n: int, device: torch.device, dtype: torch.dtype,
                            min_seconds: float = 0.3, min_samples: int = 5) -> float:
    """Achieved FLOP/s of a plain [m, k] @ [k, n] torch.matmul on this machine.

    Best of at least `min_samples` timed groups (a group repeats the call until it lasts >= 1 ms),
    so a busy machine's preemptions lower the figure less.
    """
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    torch.matmul(a, b)
    best, spent, samples, group = 0.0, 0.0, 0, 1
    while spent < min_seconds or samples < min_samples:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(group):
            torch.matmul(a, b)
        synchronize(device)
        took = time.perf_counter() - start
        spent += took
        if took < 1e-3 and group < 4096:
            group *= 2
            continue
        samples += 1
        best = max(best, 2 * m * k * n * group / took)
    return best


def known_peak(device: torch.device) -> Optional[tuple[float, str]]:
    """(FLOP/s, GPU name) from the data-sheet table, or None for an unknown device."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in KNOWN_PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12, key
    return None


@lru_cache(maxsize=None)
def peak_flops(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int]) -> PeakFlops:
    """The FLOP/s to compare against: the data-sheet peak when known, else the better of a matmul
    of the model's representative `shape` and a large square one (small shapes under-use a machine).

    Probed once per process for each (device, dtype, shape): the machine does not change between
    the benches of one run (gpu_check's cases), and they are all compared with the same figure.
    """
    probe = matmul_flops_per_second(*shape, device=device, dtype=dtype)
    side = 4096 if device.type == "cuda" else 1024
    large = matmul_flops_per_second(side, side, side, device=device, dtype=dtype)
    table = known_peak(device)
    if table is not None:
        value, source = table[0], f"data sheet ({table[1]} dense bf16)"
    else:
        value, source = max(probe, large), "best torch.matmul probe"
    return PeakFlops(probe, tuple(shape), large, (side, side, side), _dtype_name(dtype), value, source)


def attention_kernel(device: torch.device, dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int) -> str:
    """The aten SDPA kernel PyTorch dispatches to for the model's head layout (one recorded call)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    q = torch.randn(2, heads, 64, head_dim, device=device, dtype=dtype)
    kv = torch.randn(2, kv_heads, 64, head_dim, device=device, dtype=dtype)
    with Recorder() as recorder:
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=heads != kv_heads)
    kernels = [op.split(".")[1] for op in recorder.ops if "scaled_dot_product" in op]
    return ", ".join(kernels) if kernels else "math (matmul + softmax)"


def environment(device: torch.device, dtype: torch.dtype, cfg,
                load_before: Optional[tuple[float, ...]] = None) -> Environment:
    """The machine and settings of a bench; `cfg` is the transformer config (its head layout)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name() or platform.processor() or platform.machine()
    kernel = attention_kernel(device, dtype, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
    return Environment(str(device), name, torch.__version__, _dtype_name(dtype), Attention("torch sdpa", kernel),
                       torch.get_num_threads(), os.cpu_count(), load_average(), load_before)


def load_average() -> Optional[tuple[float, ...]]:
    """1/5/15-minute run-queue lengths: how busy the machine was (compare with cpu_count)."""
    return tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _cpu_name() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
