"""`infinistar bench`: speed and memory of a generation, stage by stage, or its analytic cost.

The measuring is engine.measure.bench's; this module parses options and prints its typed report
(engine.measure.bench_report) as tables, or as one JSON object with --json.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import click

from engine import RESOLUTIONS
from infinistar_cli.config import option
from infinistar_cli.options import resolve_model
from infinistar_cli.progress import Reporter


@click.command("bench")
@option("--model", "-m", metavar="NAME|DIR",
        help="Preset name or model directory [default: tiny, which needs no download]. Overrides --res.")
@option("--res", type=click.Choice(RESOLUTIONS), help="Released preset to measure (720p or 480p).")
@option("--seconds", type=click.IntRange(min=1), help="Video length [default: the preset's].")
@option("--mode", type=click.Choice(("t2v", "t2i", "i2v")), default="t2v", show_default=True,
        help="What to generate (i2v needs a pipeline that supports it).")
@option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
        help="Measured runs; stage times are their median.")
@option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
        help="Unmeasured runs first (the first run of all is reported as 'cold').")
@option("--random-weights", is_flag=True,
        help="Full-size architecture with random weights on the device: speed and memory without a download.")
@option("--force", is_flag=True, help="Allow --random-weights of an 8B model on the CPU.")
@option("--dry-run", "--analytic", "dry_run", is_flag=True,
        help="Allocate nothing: print the analytic tokens, FLOPs and KV-cache size only.")
@option("--text-tokens", type=click.IntRange(min=1),
        help="Prompt length for --dry-run [default: the text encoder's maximum (512), an upper bound].")
@option("--threads", type=click.IntRange(min=1), help="CPU threads for torch [default: torch's].")
@option("--prompt", default=None, help="Prompt to generate from [default: a fixed bench prompt].")
@option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@option("--json", "json_output", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_context
def bench(ctx: click.Context, **options: Any) -> None:
    """Measure load, text encoding, sampling, decoding and writing; report FLOP/s and memory.

    \b
    Examples:
      infinistar bench                                  # tiny model, CPU-friendly
      infinistar bench --res 720p --random-weights      # real 720p speed, no download (GPU)
      infinistar bench --res 480p --seconds 10 --dry-run   # analytic cost only
    """
    from engine import bench as engine_bench

    settings = ctx.obj
    mode = options["mode"]
    name = options["model"] or (None if options["res"] else "tiny")  # tiny needs no download
    model = resolve_model(ctx, "t2v" if mode == "i2v" else mode, name, options["res"], options["seconds"])
    spec = engine_bench.BenchSpec(
        model=str(model), device=settings.device, mode=mode, seconds=options["seconds"],
        repeat=options["repeat"], warmup=options["warmup"], random_weights=options["random_weights"],
        force=options["force"], prompt=options["prompt"] or engine_bench.DEFAULT_PROMPT, seed=options["seed"],
        threads=options["threads"],
    )
    if options["dry_run"]:
        analytic = engine_bench.analyze(spec, options["text_tokens"])
        if options["json_output"]:
            click.echo(json.dumps({"model": spec.model, "mode": mode, "dry_run": True, "analytic": analytic.to_dict()},
                                  default=str))
        else:
            render_analytic(analytic, mode)
        return
    reporter = Reporter(quiet=settings.quiet or options["json_output"], verbose=settings.verbose, rich=False)
    report = engine_bench.run_bench(spec, on_message=reporter.message)
    if options["json_output"]:
        click.echo(json.dumps({**report.to_dict(), "dry_run": False}, default=str))
    else:
        render_analytic(report.analytic, mode)
        render(report)


# ---------------------------------------------------------------------------------- rendering


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.2f} {unit}"


def _bytes(value: Optional[float]) -> str:
    if value is None:
        return "-"
    for factor, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= factor:
            return f"{value / factor:.2f} {name}"
    return f"{int(value)} B"


def _table(title: str, columns: tuple[str, ...], rows: list[tuple], numeric: bool = True) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=any(columns))
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if numeric and i else "left")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    return table


def analytic_rows(a: Any) -> list[tuple]:
    """Table rows of an engine.measure.bench_report.Analytic."""
    flops, kv = a.flops, a.kv_cache
    text = f"{a.text_tokens}" + (" (assumed maximum)" if a.text_tokens_assumed_max else "")
    return [
        ("output", f"{a.width}x{a.height}, " + (f"{a.frames} frames ({a.seconds:g} s)"
                                                 if a.frames > 1 else "1 frame (image)")),
        ("schedule", f"{a.clips} clips, {a.scales} scales, {a.steps} steps"),
        ("batch", f"{a.batch} ({'cond + uncond' if a.guidance else 'no guidance'})"),
        ("text tokens", text),
        ("visual query tokens", f"{a.query_tokens:,} (largest step {a.max_query_tokens:,}, "
                                f"up to {a.max_key_tokens:,} keys)"),
        ("FLOPs total", _si(flops.total, "FLOP")),
        ("  attention core", _si(flops.attention, "FLOP")),
        ("  MLP", _si(flops.mlp, "FLOP")),
        ("  Q/K/V/O projections", _si(flops.projections, "FLOP")),
        ("  embeddings + heads", _si(flops.embed_and_heads, "FLOP")),
        ("  text prefix", _si(flops.text_prefix, "FLOP")),
        ("KV cache peak", f"{_bytes(kv.bytes_bf16)} bf16 / {_bytes(kv.bytes_fp32)} fp32"),
        ("transformer weights", f"{_si(a.transformer_parameters, 'params')}: "
                                f"{_bytes(a.transformer_bytes.bf16_blocks)} (bf16 blocks), "
                                f"{_bytes(a.transformer_bytes.fp32)} fp32"),
    ]


def render_analytic(a: Any, mode: str) -> None:
    from rich.console import Console

    Console().print(_table(f"analytic cost: {a.preset} {mode}", ("", ""), analytic_rows(a), numeric=False))


def render(report: Any) -> None:
    """The measured tables of an engine.measure.bench_report.BenchReport."""
    from rich.console import Console

    console = Console()
    env = report.environment
    load = " / ".join(f"{x:g}" for x in env.load_average or [])
    console.print(_table("environment", ("", ""), [
        ("device", f"{env.device} ({env.device_name})"),
        ("torch", env.torch),
        ("dtype", env.dtype),
        ("attention", f"{env.attention.backend}: {env.attention.kernel}"),
        ("threads / cores", f"{env.threads} / {env.cpu_count}"),
        ("load average", f"{load} (1/5/15 min, at the end)"),
    ], numeric=False))
    cold, warm = report.cold, report.warm
    rows = [("load model", f"{report.load.seconds:.2f}", "", _bytes(report.load.peak_memory_bytes))]
    for stage in cold:  # in pipeline order; i2v adds encode_reference
        rows.append((stage, f"{cold[stage].seconds:.3f}", f"{warm[stage].seconds:.3f}",
                     _bytes(warm[stage].peak_memory_bytes)))
    runs = len([r for r in report.runs if r.kind == "measured"])
    console.print(_table(f"stages (warm = median of {runs} measured run(s))",
                         ("stage", "cold s", "warm s", "peak memory"), rows))
    console.print(f"peak memory: {report.memory.attribution}")
    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow")
    s, peak = report.sampling, report.peak_flops
    console.print(_table("sampling (warm)", ("", ""), [
        ("steps / s", f"{s.steps_per_second:.2f} ({s.steps} steps)"),
        ("tokens / s", f"{s.tokens_per_second:,.1f}"),
        ("achieved", _si(s.flops_per_second, "FLOP/s")),
        ("peak", f"{_si(peak.value, 'FLOP/s')} ({peak.source})"),
        ("MFU", f"{100 * s.mfu:.1f} %"),
    ], numeric=False))
    console.print(_table("per clip", ("clip", "steps", "seconds", "FLOP/s"), [
        (c.clip, c.steps, f"{c.seconds:.3f}", _si(c.flops / max(c.seconds, 1e-9), "FLOP/s")) for c in s.per_clip]))
    console.print(_table("slowest scales", ("scale", "clip", "tokens", "steps", "seconds"), [
        (e.scale, e.clip, e.query_tokens, e.steps, f"{e.seconds:.3f}") for e in s.slowest_scales]))
