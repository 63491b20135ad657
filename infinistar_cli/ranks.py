"""t2v/t2i/i2v/extend started by `torchrun --nproc-per-node N -m infinistar_cli ...` (N > 1).

Two ways to use the ranks, both through the usual plan and `generate_one`:
- sharded (default): rank 0 reads the prompts and plans every output once (seeds, names, which
  files exist) and hands the plan to every rank; the outputs still to make are dealt round-robin
  (rank r takes the r-th, (r+N)-th, ...), each rank loads the model once on its own device and
  writes its own files. A job that fails is reported and the rank goes on with its others; rank 0
  collects every rank's records, prints the summary and exits 1 naming the failed outputs.
- tensor (`--parallel tensor`, engine.parallel.tensor_parallel): every rank runs every output with its shard of
  the transformer; rank 0 writes the files.

A sharded batch records its number of ranks in a small manifest next to its outputs
(`.infinistar-batch-<hash>.json`, removed when the batch is complete), so a rerun with another
number of ranks is refused instead of silently re-dealing a half-finished batch.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import click

import engine
from engine import World, ranks
from infinistar_cli import summary
from infinistar_cli.one_output import emit_record, generate_one, report_skipped
from infinistar_cli.options import GenerationOptions, WriteOptions
from infinistar_cli.output_plan import Planned, collect_jobs, plan_outputs
from infinistar_cli.progress import Reporter
from infinistar_cli.story import read_story

MANIFEST_PREFIX = ".infinistar-batch-"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def manifest_path(plan: list[Planned]) -> Path:
    """Where a batch's manifest lives: its outputs' common directory, named by their paths."""
    paths = sorted(str(item.path.absolute()) for item in plan)
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:12]
    return Path(os.path.commonpath([str(Path(p).parent) for p in paths])) / f"{MANIFEST_PREFIX}{digest}.json"


def check_manifest(plan: list[Planned], world: World) -> Optional[Path]:
    """Record the batch's number of ranks, or refuse a rerun with another one while outputs are
    missing. Returns the manifest path (None when there is nothing to do)."""
    path = manifest_path(plan)
    todo = sum(not item.skip for item in plan)
    recorded = None
    if path.is_file():
        try:
            recorded = json.loads(path.read_text()).get("world_size")
        except (OSError, ValueError, AttributeError):
            recorded = None  # unreadable: start the record afresh
    if todo == 0:
        path.unlink(missing_ok=True)
        return None
    if recorded is not None and recorded != world.size:
        raise click.UsageError(
            f"this batch was started with {recorded} ranks and {todo} of its outputs are still to make; "
            f"rerun it with {recorded} processes in all, or delete {path} to share the rest among {world.size}")
    if recorded is None:
        record = {"world_size": world.size, "outputs": [str(item.path) for item in plan]}
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps(record, indent=1) + "\n")
        temp.replace(path)
    return path


def check_tensor_parallel(model: str, options: GenerationOptions, world: World) -> None:
    """Refuse a split the model's heads or the chosen modes do not allow, before anything loads."""
    from engine import presets
    from engine import tensor_parallel
    from engine import preset_for_folder

    preset = presets.get(model) if model in presets.names() else preset_for_folder(Path(model).expanduser())
    tensor_parallel.check_modes("tensor", options.offload, options.weights)
    tensor_parallel.check_ranks(preset.transformer, world.size)


def run_ranks(ctx: click.Context, model: str, options: GenerationOptions, world: World) -> None:
    """The body of `generate` when torchrun started several ranks."""
    settings = ctx.obj
    tensor = options.parallel == "tensor"
    device = ranks.rank_device(world, settings.device)
    ranks.init(world, device)
    try:
        _run(ctx, model, options, world, device, tensor)
    except ranks.Rejected as rejected:
        raise click.exceptions.Exit(rejected.exit_code) from None
    finally:
        ranks.finish()


def _prepare(model: str, options: GenerationOptions, world: World, tensor: bool) -> tuple[list[Planned], Optional[Path]]:
    """Rank 0's reading of the prompts and plan (stdin and random seeds are read and drawn once)."""
    if tensor:
        check_tensor_parallel(model, options, world)
    jobs = collect_jobs(options)
    plan = plan_outputs(options, model, jobs, (*options.then, *read_story(options.story)))
    manifest = None if tensor else check_manifest(plan, world)
    return plan, manifest


def _run(ctx: click.Context, model: str, options: GenerationOptions, world: World, device: Any, tensor: bool) -> None:
    settings = ctx.obj
    plan, manifest = ranks.agree(lambda: _prepare(model, options, world, tensor), world)
    todo = [item for item in plan if not item.skip]
    mine = todo if tensor else todo[world.rank::world.size]
    quiet = settings.quiet or (not world.leader and not settings.verbose)
    records: list[dict] = []
    with Reporter(quiet=quiet, verbose=settings.verbose) as reporter:
        if world.leader:
            report_skipped(plan, options.json_output, reporter, rank=0)
            if not todo:
                reporter.message("nothing to do: every output already exists")
            how = f"tensor parallel over {world.size} ranks" if tensor else f"{len(todo)} outputs shared among {world.size} ranks"
            if todo:
                reporter.message(f"model {model}, {how}, device {device} on rank 0")
        if mine:
            pipeline = engine.load_pipeline(model, device=str(device), on_event=reporter.on_event,
                                            parallel=options.parallel, **options.load_options)
            reporter.message(summary.model_line(pipeline.info()))
            reporter.begin_batch(len(mine))
            for number, item in enumerate(mine, start=1):
                label = f"[{number}/{len(mine)}]" if tensor else f"[rank {world.rank}: {number}/{len(mine)}]"
                reporter.begin_output(label, summary.prompt_echo(label, item.request.seed, item.request.prompt))
                if tensor and not world.leader:
                    _follow(pipeline, item, model, options.writing, reporter)
                    continue
                record = _attempt(pipeline, item, model, options.writing, reporter, settings.verbose, tensor)
                record["rank"] = world.rank
                if record["status"] == "written":
                    reporter.finish_output(summary.written_line(label, record, record["timings"]["total"]))
                else:
                    click.echo(f"rank {world.rank}: output {item.index} ({item.path}) failed: {record['error']}", err=True)
                emit_record(options.json_output, record, reporter)
                records.append(record)
        gathered = ranks.gather(records, world)
        if world.leader:
            _summarise([r for rank_records in gathered for r in rank_records], plan, manifest, world, reporter)


def _attempt(pipeline: Any, item: Planned, model: str, writing: WriteOptions, reporter: Reporter, verbose: bool,
             tensor: bool) -> dict:
    """One output; in a sharded batch a failure becomes a `failed` record instead of ending the rank."""
    try:
        return generate_one(pipeline, item, model, writing, reporter)
    except Exception as error:  # noqa: BLE001 - reported per output, the rank goes on
        if tensor:
            raise  # every rank computes this output together: they stop together
        if verbose:
            traceback.print_exc()
        return {"status": "failed", "path": str(item.path), "seed": item.request.seed,
                "prompt": item.request.prompt, "index": item.index, "error": _one_line(error)}


def _follow(pipeline: Any, item: Planned, model: str, writing: WriteOptions, reporter: Reporter) -> None:
    """A tensor-parallel rank other than 0 computes the same output (the collectives need every
    rank) and writes nothing; story segments are written to a scratch file that is removed."""
    if not item.segments and item.request.mode != "extend":
        pipeline.run(item.request, on_event=reporter.on_event)
        return
    with tempfile.TemporaryDirectory(prefix="infinistar-rank-") as scratch:
        generate_one(pipeline, replace(item, path=Path(scratch) / item.path.name), model,
                     replace(writing, overwrite=True), reporter)


def _summarise(records: list[dict], plan: list[Planned], manifest: Optional[Path], world: World,
               reporter: Reporter) -> None:
    written = sum(r["status"] == "written" for r in records)
    failed = sorted((r for r in records if r["status"] == "failed"), key=lambda r: r["index"])
    skipped = sum(item.skip for item in plan)
    if len(plan) > 1 or failed:
        reporter.message(f"done: {written} written, {skipped} skipped, {len(failed)} failed ({world.size} ranks)")
    if manifest is not None and not failed:
        manifest.unlink(missing_ok=True)  # complete: a rerun may use any number of ranks
    if failed:
        named = "; ".join(f"output {r['index']} {r['path']} (rank {r['rank']}: {r['error']})" for r in failed)
        raise click.ClickException(f"{len(failed)} of {len(plan)} outputs failed: {named}")
