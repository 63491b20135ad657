"""`infinistar t2v` and `infinistar t2i` (and the run they share with i2v/extend): prompts in, files out.

Everything that can be checked is checked before the model is loaded (names, seeds, prompt
files, output paths), so a typo never costs a model load. The model is loaded once per run.
"""
from __future__ import annotations

import time
from typing import Any

import click

import engine
from engine import ranks
from infinistar_cli import summary
from infinistar_cli.one_output import emit_record, generate_one, report_skipped
from infinistar_cli.options import GenerationOptions, generation_options, resolve_model
from infinistar_cli.output_plan import collect_jobs, plan_outputs
from infinistar_cli.progress import Reporter
from infinistar_cli.story import read_story


def generation_command(mode: str, help: str) -> click.Command:
    """The click command of `mode` (t2v, t2i, i2v, extend): its options, built once into a
    GenerationOptions, run by `generate`."""

    @click.command(mode, help=help)
    @generation_options(mode)
    @click.pass_context
    def command(ctx: click.Context, **params: Any) -> None:
        generate(ctx, GenerationOptions.from_params(mode, params))

    return command


t2v = generation_command("t2v", """Generate videos from a text PROMPT (or a --prompt-file batch).

    \b
    Examples:
      infinistar t2v "a red fox running through snow"
      infinistar t2v --seconds 10 --seed 1 --seed 2 "waves at dusk"
      infinistar t2v --prompt-file shots.txt -o "out/{index:03d}_{slug}.mp4"
    """)

t2i = generation_command("t2i", """Generate images from a text PROMPT (or a --prompt-file batch).

    \b
    Examples:
      infinistar t2i "a lighthouse on a cliff, oil painting"
      infinistar t2i --seed 7 -o lighthouse.png "a lighthouse on a cliff"
    """)


def generate(ctx: click.Context, options: GenerationOptions) -> None:
    settings = ctx.obj
    mode = options.mode
    model = resolve_model(ctx, mode, options.model, options.res, options.seconds)
    if options.dry_run:
        from infinistar_cli.dry_run import print_estimate

        world = ranks.world_from_env()
        if world is not None and not world.leader:
            return  # under torchrun, rank 0 prints the estimate
        print_estimate(model, options)
        return
    world = ranks.world_from_env()
    if options.parallel == "tensor" and world is None:
        raise click.UsageError("--parallel tensor splits one video across the processes torchrun starts: "
                               "run torchrun --nproc-per-node N -m infinistar_cli ... --parallel tensor")
    if world is not None and world.size > 1:
        from infinistar_cli.ranks import run_ranks

        return run_ranks(ctx, model, options, world)
    jobs = collect_jobs(options)
    segments = (*options.then, *read_story(options.story))
    plan = plan_outputs(options, model, jobs, segments)
    with Reporter(quiet=settings.quiet, verbose=settings.verbose) as reporter:
        todo = [item for item in plan if not item.skip]
        report_skipped(plan, options.json_output, reporter)
        if not todo:
            reporter.message("nothing to do: every output already exists")
            return
        start = time.perf_counter()
        pipeline = engine.load_pipeline(model, device=settings.device, on_event=reporter.on_event,
                                        **options.load_options)
        load_seconds = time.perf_counter() - start
        reporter.message(summary.model_line(pipeline.info()))
        if options.aspect == "auto":
            reporter.message("note: --aspect auto; the models were trained at 16:9 (h/w 0.571), "
                             "other aspect templates may look worse")
        reporter.begin_batch(len(todo))
        for number, item in enumerate(todo, start=1):
            label = f"[{number}/{len(todo)}]" if len(todo) > 1 else ""
            reporter.begin_output(label, summary.prompt_echo(label, item.request.seed, item.request.prompt))
            record = generate_one(pipeline, item, model, options.writing, reporter)
            if number == 1:
                record["timings"]["load"] = round(load_seconds, 3)
            # The summary counts the load in the first output only: it happened once.
            shown = {key: value for key, value in record["timings"].items() if key != "load" or number == 1}
            total = record["timings"]["total"] + (load_seconds if number == 1 else 0)
            reporter.finish_output(summary.written_line(label, {**record, "timings": shown}, total))
            emit_record(options.json_output, record, reporter)
        if len(plan) > 1:
            reporter.message(summary.done_line(len(todo), len(plan) - len(todo), time.perf_counter() - start))
