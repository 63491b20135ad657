"""Timing harness behind `infinistar bench`: stage times, per-step times and peak memory of real runs.

The bench runs `Pipeline.run` itself and times it from the outside through its events (the device
is synchronised before every clock read), so it measures exactly what `t2v`/`t2i` execute. Stage
boundaries are the pipeline's own events: encode_text 0 -> 1, then each sampling step ends at its
`sample` event, and decode runs from `decode 0` to `decode total`; the file write is
`video_io.write_result` into a temporary folder that is deleted afterwards.

Peak memory per stage: on CUDA `max_memory_allocated` after `reset_peak_memory_stats` at the stage
start (tensors only, not the allocator's cache). On Linux CPUs the kernel's peak RSS (VmHWM) is
reset at each stage start by writing 5 to /proc/self/clear_refs, so a stage's figure is the
whole process's peak RSS during that stage (weights and Python included). Where that reset is
refused, VmHWM only grows and each figure is the peak since the process started (reported as
such in `memory.attribution`).
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from engine import presets
from engine.media import video_io
from engine.measure.costs import GenerationCost, block_parameter_count, generation_cost, parameter_count
from engine.errors import InfinistarError
from engine.checkpoints.loading import Components, resolve_device
from engine.checkpoints.model_folder import preset_for_folder
from engine.generate.pipeline import Pipeline, frames_for, sampling_for
from engine.presets import Preset
from engine.request import Event, GenerationRequest
from engine.model.schedule import build_schedule
from engine.model.text_encoder import FLAN_T5_MAX_LENGTH, TINY_MAX_LENGTH, TextEncoder
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE, _bit_mask

DEFAULT_PROMPT = "a red fox running through fresh snow at golden hour, cinematic"
MODES = ("t2v", "t2i", "i2v")
GIB = 2**30
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
# Flan-T5-XL encoder shape: the random-weight text encoder of the 8B presets.
T5_XL = dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32)
T5_XL_PARAMS = 1_223_527_424


class BenchError(InfinistarError):
    """A bench that cannot or should not be run as asked."""


@dataclass(frozen=True)
class BenchSpec:
    """What to measure. `model` is a preset name or a model folder."""

    model: str = "tiny"
    device: str = "auto"
    mode: str = "t2v"
    seconds: Optional[int] = None
    repeat: int = 1
    warmup: int = 1
    random_weights: bool = False
    force: bool = False
    prompt: str = DEFAULT_PROMPT
    seed: int = 0
    cache_dir: Optional[str] = None
    threads: Optional[int] = None  # CPU threads for the bench (torch.set_num_threads), restored after


def preset_of(model: str) -> Preset:
    """The preset a name or model folder runs with, without loading any weights."""
    if model in presets.names():
        return presets.get(model)
    if Path(model).is_dir():
        return preset_for_folder(Path(model))
    if "/" in model or "\\" in model or model.startswith("."):
        raise BenchError(f"model folder {model} does not exist.")
    return presets.get(model)  # raises UnknownPresetError listing the known names


def _check(spec: BenchSpec) -> None:
    if spec.mode not in MODES:
        raise BenchError(f"mode {spec.mode!r} is not one of {', '.join(MODES)}.")
    if spec.repeat < 1 or spec.warmup < 0:
        raise BenchError("--repeat must be at least 1 and --warmup at least 0.")
    if spec.threads is not None and spec.threads < 1:
        raise BenchError("--threads must be at least 1.")


# ---------------------------------------------------------------------------------- analytic


def analyze(spec: BenchSpec, text_tokens: Optional[int] = None) -> dict:
    """Tokens, FLOPs, KV-cache and weight sizes of one generation; no model is built.

    Without `text_tokens` the prompt is assumed as long as the text encoder allows (an upper bound).
    """
    _check(spec)
    preset = preset_of(spec.model)
    cost, frames, guided = generation_cost_for(preset, spec, text_tokens or max_text_tokens(preset))
    return _analytic_dict(preset, cost, frames, guided, text_tokens is None)


def max_text_tokens(preset: Preset) -> int:
    """The longest prompt the preset's text encoder passes on (its tokenizer's max length)."""
    encoder_max = TINY_MAX_LENGTH if preset.text_encoder == "tiny" else FLAN_T5_MAX_LENGTH
    return min(encoder_max, preset.transformer.text_maxlen)


def generation_cost_for(preset: Preset, spec: BenchSpec, text_tokens: int) -> tuple[GenerationCost, int, bool]:
    """(cost, pixel frames, guided) of the generation `spec` asks of `preset`."""
    mode = "t2i" if spec.mode == "t2i" else "t2v"  # i2v runs the t2v schedule, forced scales included
    frames = frames_for(preset, mode, spec.seconds)
    schedule = build_schedule(preset, frames)
    sampling = sampling_for(preset, GenerationRequest(mode=mode, prompt="x", seed=spec.seed))
    guided = sampling.cfg_scale != 1
    cost = generation_cost(schedule, preset.transformer, text_tokens, guided,
                           max_repeat_times=sampling.max_repeat_times)
    return cost, frames, guided


def _analytic_dict(preset: Preset, cost: GenerationCost, frames: int, guided: bool, assumed_text: bool) -> dict:
    schedule = build_schedule(preset, frames)
    params = parameter_count(preset.transformer)
    h, w = schedule.pixel_size
    return {
        "preset": preset.name,
        "frames": frames,
        "seconds": (frames - 1) / preset.fps if frames > 1 else 0,
        "height": h,
        "width": w,
        "latent_frames": schedule.latent_frames,
        "clips": schedule.num_clips,
        "scales": len(schedule.infos),
        "guidance": guided,
        "text_tokens_assumed_max": assumed_text,
        **cost.summary(),
        "kv_cache": {
            "policy": "minimal (text + referenced scales, freed after last use)",
            "elements": cost.kv_cache_elements,
            "bytes_bf16": 2 * cost.kv_cache_elements,
            "bytes_fp32": 4 * cost.kv_cache_elements,
        },
        "transformer_parameters": params,
        "transformer_bytes": {"bf16_blocks": _transformer_bytes(preset, bf16=True),
                              "fp32": 4 * params},
    }


def _transformer_bytes(preset: Preset, bf16: bool) -> int:
    """Weight bytes as loaded: blocks bf16 and the rest fp32 on CUDA, all fp32 elsewhere."""
    total = parameter_count(preset.transformer)
    blocks = preset.transformer.depth * block_parameter_count(preset.transformer)
    return 2 * blocks + 4 * (total - blocks) if bf16 else 4 * total


# ---------------------------------------------------------------------------------- random weights


def random_weight_bytes(preset: Preset, device: torch.device) -> int:
    """Memory the random-weight components take on `device` (transformer, VAE, text encoder)."""
    cuda = device.type == "cuda"
    text = T5_XL_PARAMS * (2 if cuda else 4) if preset.text_encoder == "flan-t5-xl" else 0
    vae = sum(p.numel() for p in _meta_vae(preset).parameters()) * 4
    return _transformer_bytes(preset, bf16=cuda) + vae + text


def _meta_vae(preset: Preset) -> VideoVAE:
    with torch.device("meta"):
        return VideoVAE(preset.vae)


@torch.no_grad()
def _init_random(module: torch.nn.Module, generator: torch.Generator) -> None:
    """In-place init after `to_empty`: unit gains, zero biases, N(0, 1/fan_in) matrices.

    Values are kept small and finite on purpose: NaNs or denormals would change CPU speed.
    """
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim == 1 and leaf != "bias":
            p.fill_(1.0)
        elif leaf == "bias":
            p.zero_()
        else:
            p.normal_(0.0, p[0].numel() ** -0.5, generator=generator)


def check_random_weights(preset: Preset, device: torch.device, force: bool) -> None:
    """Refuse building a multi-billion-parameter model in CPU RAM unless forced."""
    needed = random_weight_bytes(preset, device)
    if device.type == "cpu" and parameter_count(preset.transformer) > 1e9 and not force:
        raise BenchError(
            f"--random-weights would build the {preset.name} model on the CPU with about {needed / GIB:.0f} GiB "
            f"of fp32 weights in RAM; pass --force to do it anyway, or --dry-run for the analytic figures only."
        )


def random_components(preset: Preset, device: torch.device, seed: int = 0) -> Components:
    """The preset's full-size architecture with random weights, allocated once on `device` in the
    dtype the real weights would get (blocks bf16 on CUDA): no fp32 detour, no CPU copy."""
    cuda = device.type == "cuda"
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        transformer = InfinityTransformer(preset.transformer)
    if cuda:
        for block in transformer.layers():
            block.to(torch.bfloat16)
    transformer.to_empty(device=device)
    _init_random(transformer, generator)
    vae = _meta_vae(preset).to_empty(device=device)
    _init_random(vae, generator)
    for name, buffer in vae.named_buffers():
        buffer.copy_(_bit_mask(buffer.numel()))
    if preset.text_encoder == "tiny":
        text = TextEncoder.tiny(seed=seed, device=device)
    else:
        text = _random_t5_xl(device, generator)
    return Components(preset, transformer.eval().requires_grad_(False), vae.eval().requires_grad_(False), text,
                      device, "random weights")


def _random_t5_xl(device: torch.device, generator: torch.Generator) -> TextEncoder:
    """A Flan-T5-XL-shaped encoder with random weights and a byte tokenizer (no download).

    Byte tokens make a prompt about 4x longer than T5's sentencepiece would: the measured text
    length is reported, and the text encoder is a small share of the time anyway.
    """
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    config = T5Config(**T5_XL, feed_forward_proj="gated-gelu")
    with torch.device("meta"):
        model = T5EncoderModel(config)
    model = model.to(torch.bfloat16 if device.type == "cuda" else torch.float32).to_empty(device=device)
    _init_random(model, generator)
    return TextEncoder(ByT5Tokenizer(extra_ids=0), model, FLAN_T5_MAX_LENGTH)


# ---------------------------------------------------------------------------------- clocks and memory


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _status_kib(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class MemoryProbe:
    """Peak memory of one stage at a time (see the module docstring for what is measured)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.attribution = "cuda max_memory_allocated, reset at each stage start"
        elif self._reset_rss_peak():
            self.attribution = "process peak RSS (VmHWM), reset at each stage start via /proc/self/clear_refs"
        elif _status_kib("VmHWM") is not None:
            self.attribution = "process peak RSS (VmHWM) since the process started: it never decreases"
        else:
            self.attribution = "process peak RSS (getrusage ru_maxrss) since the process started"

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "reset" in self.attribution:
            self._reset_rss_peak()

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        hwm = _status_kib("VmHWM")
        if hwm is not None:
            return hwm * 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StageClock:
    """Event callback that cuts a pipeline run into stages and sampling steps."""

    def __init__(self, device: torch.device, memory: MemoryProbe) -> None:
        self.device, self.memory = device, memory
        self.stages: dict[str, dict] = {}
        self.steps: list[dict] = []
        self._open: Optional[tuple[str, float]] = None
        self._last_step = 0.0

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def begin(self, stage: str) -> float:
        t = self.now()
        self.memory.reset()
        self._open = (stage, t)
        return t

    def end(self) -> float:
        t = self.now()
        if self._open is not None:
            stage, start = self._open
            self.stages[stage] = {"seconds": t - start, "peak_memory_bytes": self.memory.peak_bytes()}
            self._open = None
        return t

    def __call__(self, event: Event) -> None:
        if event.stage == "encode_reference" and event.done == 0:  # i2v / extend: the VAE encode
            self.begin("encode_reference")
        elif event.stage == "encode_reference":
            self.end()
        elif event.stage == "encode_text" and event.done == 0:
            self.begin("encode_text")
        elif event.stage == "encode_text":
            self.end()
            self._last_step = self.begin("sample")
        elif event.stage == "sample":
            t = self.now()
            self.steps.append({"clip": event.clip, "scale": event.scale, "repetition": event.repetition,
                               "seconds": t - self._last_step})
            self._last_step = t
        elif event.stage == "decode" and event.done == 0:
            self.end()
            self.begin("decode")
        elif event.stage == "decode" and event.done >= event.total:
            self.end()


# ---------------------------------------------------------------------------------- peaks and kernels


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


def peak_flops(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int]) -> dict:
    """The FLOP/s to compare against: the data-sheet peak when known, else the better of a matmul
    of the model's representative `shape` and a large square one (small shapes under-use a machine)."""
    probe = matmul_flops_per_second(*shape, device=device, dtype=dtype)
    side = 4096 if device.type == "cuda" else 1024
    large = matmul_flops_per_second(side, side, side, device=device, dtype=dtype)
    table = known_peak(device)
    out = {"matmul_probe": probe, "matmul_shape": list(shape), "matmul_probe_large": large,
           "matmul_large_shape": [side] * 3, "matmul_dtype": str(dtype).replace("torch.", "")}
    if table is not None:
        out.update(value=table[0], source=f"data sheet ({table[1]} dense bf16)")
    else:
        out.update(value=max(probe, large), source="best torch.matmul probe")
    return out


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


def environment(device: torch.device, dtype: torch.dtype, cfg) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name() or platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "attention": {"backend": "torch sdpa",
                      "kernel": attention_kernel(device, dtype, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)},
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": _load_average(),
    }


def _load_average() -> Optional[list[float]]:
    """1/5/15-minute run-queue lengths: how busy the machine was (compare with cpu_count)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _cpu_name() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------- the bench


BenchCallback = Callable[[str], None]


def _median_stages(runs: list[dict]) -> dict:
    names = [n for n in runs[0]["stages"]]
    return {n: {"seconds": statistics.median(r["stages"][n]["seconds"] for r in runs),
                "peak_memory_bytes": max(r["stages"][n]["peak_memory_bytes"] for r in runs)} for n in names}


def _sampling_detail(run: dict, cost: GenerationCost, slowest: int = 5) -> dict:
    """Per-clip and per-scale time of one run's sampling steps."""
    by_scale: dict[int, dict] = {}
    for i, (step, analytic) in enumerate(zip(run["steps"], cost.steps)):
        entry = by_scale.setdefault(step["scale"], {"scale": step["scale"], "clip": step["clip"], "steps": 0,
                                                    "seconds": 0.0, "query_tokens": analytic.query_tokens,
                                                    "key_tokens": analytic.key_tokens, "flops": 0})
        entry["steps"] += 1
        entry["seconds"] += step["seconds"]
        # The first step's time includes the text prefix pass, so its FLOPs do too.
        entry["flops"] += analytic.flops + (cost.prefix_flops if i == 0 else 0)
    clips: dict[int, dict] = {}
    for entry in by_scale.values():
        clip = clips.setdefault(entry["clip"], {"clip": entry["clip"], "steps": 0, "seconds": 0.0, "flops": 0})
        for key in ("steps", "seconds", "flops"):
            clip[key] += entry[key]
    top = sorted(by_scale.values(), key=lambda e: -e["seconds"])[:slowest]
    return {"per_clip": list(clips.values()), "slowest_scales": top}


def run_bench(spec: BenchSpec, on_message: Optional[BenchCallback] = None) -> dict:
    """Load (or build) the model, run warm-up + measured generations, return one report dict."""
    _check(spec)
    before = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        return _run_bench(spec, on_message)
    finally:
        torch.set_num_threads(before)


def _run_bench(spec: BenchSpec, on_message: Optional[BenchCallback]) -> dict:
    say = on_message or (lambda text: None)
    load_before = _load_average()
    device = resolve_device(spec.device)
    preset = preset_of(spec.model)
    if spec.random_weights:
        check_random_weights(preset, device, spec.force)
    memory = MemoryProbe(device)

    memory.reset()
    synchronize(device)
    start = time.perf_counter()
    if spec.random_weights:
        say(f"building {preset.name} with random weights on {device} "
            f"(about {random_weight_bytes(preset, device) / GIB:.1f} GiB)")
        pipeline = Pipeline(random_components(preset, device, spec.seed))
    else:
        say(f"loading {spec.model} on {device}")
        pipeline = Pipeline.load(spec.model, device=str(device), cache_dir=spec.cache_dir)
    synchronize(device)
    load = {"seconds": time.perf_counter() - start, "peak_memory_bytes": memory.peak_bytes(),
            "random_weights": spec.random_weights}
    pipeline.load_seconds = load["seconds"]
    return measure(pipeline, spec, load, memory, load_before, say)


def measure(pipeline: Pipeline, spec: BenchSpec, load: dict, memory: Optional[MemoryProbe] = None,
            load_before: Optional[list[float]] = None, on_message: Optional[BenchCallback] = None) -> dict:
    """Warm-up + measured runs of an already loaded pipeline (its preset may be any Preset);
    `load` is the {"seconds", "peak_memory_bytes", ...} record of how it was obtained."""
    say = on_message or (lambda text: None)
    device = pipeline.device
    memory = memory or MemoryProbe(device)
    load_before = load_before or _load_average()
    preset = pipeline.preset
    with tempfile.TemporaryDirectory(prefix="infinistar-bench-") as tmp:
        request = _request(spec, preset, Path(tmp))
        frames = frames_for(preset, "t2i" if spec.mode == "t2i" else "t2v", spec.seconds)
        text_tokens = int(pipeline.components.text.tokenize([pipeline.prompt_text(request, frames)])[1].sum())
        cost, frames, guided = generation_cost_for(preset, spec, text_tokens)
        runs = []
        total = spec.warmup + spec.repeat
        for i in range(total):
            kind = "warmup" if i < spec.warmup else "measured"
            say(f"run {i + 1}/{total} ({kind})")
            runs.append(_one_run(pipeline, request, memory, Path(tmp), kind))

    dtype = pipeline.components.transformer.block_dtype
    cfg = preset.transformer
    measured = [r for r in runs if r["kind"] == "measured"]
    warm = _median_stages(measured)
    representative = sorted(measured, key=lambda r: r["stages"]["sample"]["seconds"])[len(measured) // 2]
    sample_seconds = warm["sample"]["seconds"]
    rows = min(max(s.query_tokens for s in cost.steps) * cost.batch, 4096)
    peak = peak_flops(device, dtype, (rows, cfg.embed_dim, cfg.mlp_hidden))
    achieved = cost.flops / sample_seconds
    say("done")
    return {
        "model": spec.model,
        "mode": spec.mode,
        "environment": {**environment(device, dtype, cfg), "load_average_before": load_before},
        "analytic": _analytic_dict(preset, cost, frames, guided, assumed_text=False),
        "load": load,
        "runs": [{k: v for k, v in r.items() if k != "steps"} for r in runs],
        "cold": runs[0]["stages"],
        "warm": warm,
        "warm_includes_cold_run": spec.warmup == 0,
        "sampling": {
            "seconds": sample_seconds,
            "steps": cost.num_steps,
            "steps_per_second": cost.num_steps / sample_seconds,
            "tokens_per_second": cost.query_tokens / sample_seconds,
            "flops_per_second": achieved,
            "mfu": achieved / peak["value"],
            **_sampling_detail(representative, cost),
        },
        "peak_flops": peak,
        "memory": {"attribution": memory.attribution},
        "warnings": _warnings(device, load_before),
        "notes": [
            "tokens_per_second counts visual query tokens of every step (repetitions included) per batch "
            "row; with guidance each token is computed twice (cond + uncond), which the FLOPs include.",
            "sampling time includes the text prefix pass, sampling, guidance and latent accumulation; "
            "FLOPs count matrix products only.",
        ],
    }


def _warnings(device: torch.device, load_before: Optional[list[float]]) -> list[str]:
    """Conditions that make the figures unrepresentative."""
    busy = load_before is not None and os.cpu_count() and load_before[0] > os.cpu_count()
    if device.type == "cpu" and busy and torch.get_num_threads() > 1:
        return [f"the machine was busy (load {load_before[0]:g} on {os.cpu_count()} cores) and torch used "
                f"{torch.get_num_threads()} threads: small operations can stall waiting for a preempted thread; "
                "compare with --threads 1."]
    return []


def _request(spec: BenchSpec, preset: Preset, tmp: Path) -> GenerationRequest:
    image = None
    if spec.mode == "i2v":
        from PIL import Image

        h, w = build_schedule(preset, frames_for(preset, "t2v", spec.seconds)).pixel_size
        image = tmp / "first_frame.png"
        Image.new("RGB", (w, h), (120, 130, 140)).save(image)
    return GenerationRequest(mode=spec.mode, prompt=spec.prompt, seed=spec.seed, seconds=spec.seconds, image=image)


def _one_run(pipeline: Pipeline, request: GenerationRequest, memory: MemoryProbe, tmp: Path, kind: str) -> dict:
    clock = StageClock(pipeline.device, memory)
    start = clock.now()
    result = pipeline.run(request, on_event=clock)
    clock.begin("write")
    suffix = video_io.VIDEO_SUFFIX if result.frames.shape[0] > 1 else video_io.IMAGE_SUFFIX
    path = video_io.write_result(result, tmp / f"bench{suffix}", overwrite=True)
    end = clock.end()
    for leftover in (path, video_io.sidecar_path(path)):
        leftover.unlink(missing_ok=True)
    stages = clock.stages
    attributed = sum(s["seconds"] for s in stages.values())
    return {"kind": kind, "stages": stages, "total_seconds": end - start,
            "unattributed_seconds": max(0.0, end - start - attributed), "steps": clock.steps}
