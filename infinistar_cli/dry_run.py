"""`t2v/t2i --dry-run`: the estimated peak GPU memory of a run, from engine.measure.memory, loading nothing."""
from __future__ import annotations

import json
from pathlib import Path

import click

from engine import OFFLOAD_MODES, WEIGHT_MODES
from infinistar_cli.options import GenerationOptions

GIB = 2**30


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _preset(model: str):
    from engine import presets
    from engine import preset_for_folder

    if model in presets.names():
        return presets.get(model)
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise click.UsageError(f"model folder {model} does not exist")
    return preset_for_folder(folder)  # reads only its infinistar.json and folder names


def print_estimate(model: str, options: GenerationOptions) -> None:
    """Print the chosen mode's breakdown and a table of every mode (or one JSON object)."""
    from engine import memory
    from engine import frames_for

    preset = _preset(model)
    frames = frames_for(preset, options.mode, options.seconds)
    cfg = options.cfg if options.cfg is not None else preset.sampling.cfg_scale
    if options.parallel == "tensor":
        print_tensor_parallel(preset, frames, cfg, options)
        return
    every = memory.estimate_all(preset, frames, guided=cfg != 1, negative_prompt=bool(options.negative_prompt))
    chosen = every[(options.offload, options.weights)]
    if options.json_output:
        record = {"status": "dry-run", "estimate": chosen.to_dict(), "measured": False,
                  "peaks": {f"{o}/{w}": e.peak for (o, w), e in every.items()}}
        click.echo(json.dumps(record))
        return
    h, w = chosen.pixel_size
    length = "image" if frames == 1 else f"{frames} frames ({(frames - 1) // preset.fps} s)"
    lines = [
        f"Estimated peak GPU memory (not measured) for {preset.name}, {length}, {w}x{h}:",
        f"  {chosen.steps} transformer steps; largest scale {chosen.largest_tokens} tokens per row "
        f"({'cond + uncond' if cfg != 1 else 'no guidance'})",
        f"  weights: transformer {_gib(chosen.transformer_weights)} ({options.weights}; one block "
        f"{chosen.block_weights / 2**20:.0f} MiB), text encoder {_gib(chosen.text_encoder_weights)}, "
        f"VAE {_gib(chosen.vae_weights)}",
        f"  K/V cache peak {_gib(chosen.kv_cache)}, largest step activations {_gib(chosen.sample_activations)}, "
        f"VAE decode chunk {_gib(chosen.decode_activations)}",
        f"  on the GPU with --offload {options.offload}: "
        + ", ".join(f"{phase} {_gib(n)}" for phase, n in chosen.phases.items()),
        f"  peak {_gib(chosen.peak)} (including {_gib(memory.RUNTIME_OVERHEAD)} for the CUDA runtime)",
    ]
    if chosen.streamed_per_step:
        lines.append(f"  blocks copied to the GPU per step: {_gib(chosen.streamed_per_step)}")
    lines += ["", "  peak GiB   " + "".join(f"{w_:>8}" for w_ in WEIGHT_MODES)]
    for o in OFFLOAD_MODES:
        cells = [f"{every[(o, w_)].peak / GIB:7.1f}" + ("*" if (o, w_) == (chosen.offload, chosen.weights) else " ")
                 for w_ in WEIGHT_MODES]
        lines.append(f"  {o:<11}" + "".join(cells))
    lines.append("  (* = the chosen --offload/--weights; estimates for a CUDA GPU, see the README)")
    click.echo("\n".join(lines))


def print_tensor_parallel(preset, frames: int, cfg: float, options: GenerationOptions) -> None:
    """Per-GPU peak with --parallel tensor for every number of ranks the model's heads allow
    (the run's own WORLD_SIZE marked under torchrun)."""
    from engine import ranks
    from engine import memory
    from engine import tensor_parallel

    tensor_parallel.check_modes("tensor", options.offload, options.weights)
    world = ranks.world_from_env()
    counts = tensor_parallel.valid_rank_counts(preset.transformer)
    estimates = {n: memory.estimate(preset, frames, guided=cfg != 1, negative_prompt=bool(options.negative_prompt),
                                    ranks=n) for n in counts}
    if world is not None:
        tensor_parallel.check_ranks(preset.transformer, world.size)
    if options.json_output:
        chosen = estimates[world.size] if world is not None else None
        click.echo(json.dumps({"status": "dry-run", "measured": False, "parallel": "tensor",
                               "estimate": chosen.to_dict() if chosen else None,
                               "per_gpu_peaks": {str(n): e.peak for n, e in estimates.items()}}))
        return
    h, w = estimates[1].pixel_size
    length = "image" if frames == 1 else f"{frames} frames ({(frames - 1) // preset.fps} s)"
    lines = [f"Estimated peak memory per GPU (not measured) with --parallel tensor for {preset.name}, {length}, {w}x{h}:",
             "  ranks   peak   sampling   decoding   blocks   K/V cache   step activations"]
    for n, e in estimates.items():
        mark = "*" if world is not None and world.size == n else " "
        sampling, decoding = (e.phases[phase] + memory.RUNTIME_OVERHEAD for phase in ("sample", "decode"))
        lines.append(f"  {n:>5}{mark}{e.peak / GIB:6.1f}   {sampling / GIB:8.1f}   {decoding / GIB:8.1f}"
                     f"   {e.block_weights * preset.transformer.depth / GIB:6.1f}   {e.kv_cache / GIB:9.1f}"
                     f"   {e.sample_activations / GIB:16.1f}")
    lines.append("  (GiB per GPU with 1 GiB for the CUDA runtime; T5, VAE, embeddings and heads are whole on "
                 "every GPU, and every GPU decodes)")
    lines.append(f"  (the number of ranks must divide the {preset.transformer.num_kv_heads} K/V heads"
                 + ("; * = this run's WORLD_SIZE)" if world is not None else ")"))
    click.echo("\n".join(lines))
