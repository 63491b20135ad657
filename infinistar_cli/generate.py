"""`infinistar t2v` and `infinistar t2i` (and the shared machinery of i2v/extend): prompts in, files out.

Everything that can be checked is checked before the model is loaded (names, seeds, prompt
files, output paths), so a typo never costs a model load. The model is loaded once per run.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import click
from click.core import ParameterSource

import engine
from engine import __version__, presets, validation
from engine import DTYPES, GUIDANCE, OFFLOAD_MODES, PARALLEL_MODES, WEIGHT_MODES
from engine import OutputExistsError, RESOLUTIONS, ranks, video_io
from engine import Event, GenerationRequest
from infinistar_cli.batch import (
    SEED_MAX, BatchError, Job, check_prompt, check_template, output_path, random_seed, read_prompt_file,
)
from infinistar_cli import summary
from infinistar_cli.completion import complete_model
from infinistar_cli.config import SamplingNumber, option
from infinistar_cli.progress import Reporter
from infinistar_cli.story import read_story, write_story

# Modes conditioned on an input file: its argument name and the request field it fills.
INPUTS = {"i2v": "image", "extend": "video"}
SOURCE_RANK = {ParameterSource.COMMANDLINE: 3, ParameterSource.ENVIRONMENT: 2, ParameterSource.DEFAULT_MAP: 1}


@dataclass(frozen=True)
class Planned:
    """One output: what to generate and where; `skip` marks a batch output whose file exists."""

    request: GenerationRequest
    path: Path
    index: int
    skip: bool


def generation_options(video: bool, mode: Optional[str] = None):
    """The options of t2v (video=True), t2i, or the input-conditioned `mode` i2v/extend."""
    kind = "video" if video else "image"
    suffix = ".mp4" if video else ".png"
    extend = mode == "extend"
    seconds_help = ("Seconds of new footage: a multiple of the preset's step (480p and 720p: 5, tiny: 1) "
                    "[default: one step]." if extend else
                    "Video length: 5 (720p, 480p) or 10 (480p only); other presets have their own.")
    decorators = [
        mode in INPUTS and click.argument(INPUTS[mode], type=click.Path(dir_okay=False)),
        click.argument("prompt", required=False),
        option("--model", "-m", metavar="NAME|DIR", shell_complete=complete_model,
               help="Preset name (720p, 480p, tiny, ...) or a model directory. Overrides --res."),
        option("--res", type=click.Choice(RESOLUTIONS),
               help="Released preset to use [default: 480p, the one trained to continue videos]." if extend else
               "Released preset to use [default: 720p; 480p with --seconds 10]."),
        video and option("--seconds", type=click.IntRange(min=1), help=seconds_help),
        mode in INPUTS and option(
            "--aspect", metavar="auto|W:H",
            help="Aspect template: auto = nearest to the input's own ratio, or e.g. 16:9 [default: the "
                 "preset's 16:9, which the models were trained at (0.571); others may look worse]."),
        extend and option("--from-start", is_flag=True,
                          help="Condition on the first window of the video (the official choice), not the last."),
        extend and option("--only-new", is_flag=True,
                          help="Write only the new footage [default: the input followed by the continuation]."),
        video and click.option("--then", "then", multiple=True, metavar="PROMPT",
                               help="Continue with another segment following this prompt; repeatable."),
        video and click.option("--story", type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE",
                               help="Further segments, one prompt per line (after any --then)."),
        option("--seed", "seeds", type=click.IntRange(0, SEED_MAX), multiple=True, metavar="INT",
               help=f"Random seed; repeat for one {kind} per seed [default: random, reported]."),
        mode in INPUTS and option(
            "--encode-seed", type=click.IntRange(0, SEED_MAX), metavar="INT",
            help="Seed of the VAE's posterior draw when encoding the input [default: the --seed]."),
        option("--output", "-o", type=click.Path(), metavar="FILE|TEMPLATE",
               help=f"Output file or template with {{seed}}, {{index}}, {{slug}} "
                    f"[default: infinistar_{{slug}}_{{seed}}{suffix}]."),
        video and option("--fps", type=click.IntRange(1, 240), help="Frame rate of the file [default: the preset's]."),
        video and option("--crf", type=click.IntRange(0, 51), default=18, show_default=True,
                         help="H.264 quality: lower is better and bigger."),
        video and option("--lossless", is_flag=True,
                         help="Write H.264 RGB 4:4:4 at qp 0, which decodes to exactly the generated frames "
                              "(big; plays in ffmpeg, VLC and mpv, not in most browsers); --crf is then unused."),
        option("--guidance", type=click.Choice(GUIDANCE),
               help="How the guidance scale is applied: apg (adaptive projected) or cfg (classifier-free) "
                    "[default: the preset's]."),
        option("--cfg", type=SamplingNumber("cfg"), help="Guidance scale, 0 to 1000 [default: the preset's]."),
        option("--tau-image", type=SamplingNumber("tau_image"),
               help="Sampling temperature of the image scales, 0.001 to 10 [default: the preset's]."),
        video and option("--tau-video", type=SamplingNumber("tau_video"),
                         help="Sampling temperature of the video scales, 0.001 to 10 [default: the preset's]."),
        option("--negative-prompt", default="", help="What to steer away from [default: none]."),
        option("--prompt-decoration/--no-prompt-decoration", default=None,
               help="Add the duration tag and style suffix the official video scripts add "
                    "[default: on for videos, off for images]." if video else
                    "Add the style suffix the official video scripts add (images get no duration "
                    "tag) [default: off: the plain prompt, as image captions were trained]."),
        option("--prompt-file", type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE",
               help="Batch: one prompt per line (.txt) or JSON object per line (.jsonl); - reads stdin."),
        option("--cache-dir", type=click.Path(file_okay=False), envvar="INFINISTAR_CACHE", metavar="DIR",
               help="Where downloaded weights are [default: $INFINISTAR_CACHE, the config file, or the "
                    "Hugging Face cache]."),
        option("--overwrite", is_flag=True, help="Replace existing outputs."),
        option("--offload", type=click.Choice(OFFLOAD_MODES), default="none", show_default=True,
               help="Keep weights off the GPU until needed: model = one component at a time, "
                    "blocks = also stream the transformer's blocks (slowest, least memory)."),
        option("--weights", type=click.Choice(WEIGHT_MODES), default="bf16", show_default=True,
               help="Storage of the transformer blocks' weights: int8/fp8 halve their memory."),
        option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True,
               help="Compute dtype: auto = as released (bf16 blocks on CUDA, fp32 on the CPU); bf16 on "
                    "a CPU is faster (AVX512-BF16/AMX) but not bit-equal; fp32 everywhere, CUDA too."),
        option("--compile", "compile_blocks", is_flag=True,
               help="torch.compile the transformer blocks: slower first steps, faster later ones."),
        click.option("--parallel", type=click.Choice(PARALLEL_MODES), default="none", show_default=True,
                     help="Under torchrun: none = share the outputs among the processes; tensor = split "
                          "each video's transformer across them (less memory per GPU)."),
        click.option("--dry-run", is_flag=True,
                     help="Print the estimated peak GPU memory of every --offload/--weights mode "
                          "and exit; loads nothing."),
        option("--json", "json_output", is_flag=True, help="Print one JSON object per output on stdout."),
    ]

    def apply(function):
        for decorator in reversed([d for d in decorators if d]):
            function = decorator(function)
        return function

    return apply


@click.command("t2v")
@generation_options(video=True)
@click.pass_context
def t2v(ctx: click.Context, **options: Any) -> None:
    """Generate videos from a text PROMPT (or a --prompt-file batch).

    \b
    Examples:
      infinistar t2v "a red fox running through snow"
      infinistar t2v --seconds 10 --seed 1 --seed 2 "waves at dusk"
      infinistar t2v --prompt-file shots.txt -o "out/{index:03d}_{slug}.mp4"
    """
    generate(ctx, "t2v", options)


@click.command("t2i")
@generation_options(video=False)
@click.pass_context
def t2i(ctx: click.Context, **options: Any) -> None:
    """Generate images from a text PROMPT (or a --prompt-file batch).

    \b
    Examples:
      infinistar t2i "a lighthouse on a cliff, oil painting"
      infinistar t2i --seed 7 -o lighthouse.png "a lighthouse on a cliff"
    """
    generate(ctx, "t2i", options)


def _is_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.startswith((".", "~")) or Path(model).exists()


def resolve_model(ctx: click.Context, mode: str, options: dict) -> str:
    """The preset name or model directory to load, checking --res/--seconds/--model against each other."""
    # extend's --seconds counts new footage (engine.check_length checks it against the continuation step).
    model, res, seconds = options["model"], options["res"], None if mode == "extend" else options.get("seconds")
    if model and res:
        model_source, res_source = ctx.get_parameter_source("model"), ctx.get_parameter_source("res")
        if model_source == res_source == ParameterSource.COMMANDLINE:
            raise click.UsageError("give --model or --res, not both (--res picks a released preset)")
        if SOURCE_RANK.get(res_source, 0) > SOURCE_RANK.get(model_source, 0):
            model = None
    if not model:
        model = validation.default_model(mode, seconds, res)  # without --res, the length decides
    elif not _is_path(model):
        presets.get(model)  # an unknown name fails here, before anything loads
    check_length(model, mode, options.get("seconds"), "")
    return model


def check_length(model: str, mode: str, seconds: Optional[int], where: str) -> None:
    """Refuse lengths a named preset cannot make before anything is loaded (engine.check_length): an
    unoffered video length is a usage error, extend footage off the continuation step an error."""
    try:
        engine.check_length(model, mode, seconds, where)
    except validation.RequestFieldError as error:
        raise click.UsageError(str(error)) from None


def collect_jobs(mode: str, options: dict) -> list[Job]:
    prompt, prompt_file = options["prompt"], options["prompt_file"]
    if prompt is not None and prompt_file:
        raise click.UsageError("give a PROMPT or --prompt-file, not both")
    if prompt_file and (options.get("then") or options.get("story")):
        raise click.UsageError("--then/--story make one long video; they cannot be combined with --prompt-file")
    if mode in INPUTS:
        from engine import aspect_h_div_w, check_input  # torch: imported only when needed

        check_input(mode, options[INPUTS[mode]])  # a missing or unreadable input fails before the model loads
        if options.get("aspect"):
            aspect_h_div_w(options["aspect"], 1, 1)
    if prompt_file:
        return read_prompt_file(prompt_file, "t2i" if mode == "t2i" else "t2v")
    if prompt is None and mode in INPUTS:
        return [Job(prompt="", where="command line")]  # the input alone conditions the video
    if prompt is None:
        raise click.UsageError("missing PROMPT (or --prompt-file FILE)")
    return [Job(prompt=check_prompt(prompt, ""), where="command line")]


def plan_outputs(mode: str, model: str, jobs: list[Job], options: dict, batch: bool) -> list[Planned]:
    """Seeds, requests and output paths of every output; existing ones are skipped in a batch
    and an error otherwise (under torchrun rank 0 plans for every rank: infinistar_cli.ranks)."""
    video = mode != "t2i"
    suffix = video_io.VIDEO_SUFFIX if video else video_io.IMAGE_SUFFIX
    source = options.get(INPUTS.get(mode, ""))
    inputs = {} if source is None else {INPUTS[mode]: Path(source), "aspect": options.get("aspect")}
    if source is not None:
        inputs["encode_seed"] = options["encode_seed"]
    if mode == "extend":
        inputs.update(from_start=options["from_start"], only_new=options["only_new"])
    if options["output"]:
        check_template(options["output"], "--output")
    planned: list[Planned] = []
    claimed: dict[Path, str] = {}
    for job in jobs:
        overrides = dict(job.overrides)
        check_length(model, mode, overrides.get("seconds"), job.where)
        for seed in job.seeds or options["seeds"] or (random_seed(),):
            index = len(planned) + 1
            template = job.output or options["output"]
            name = job.prompt or (Path(source).stem if source else "")
            path = output_path(template, seed=seed, index=index, prompt=name, suffix=suffix, where=job.where)
            owner = f"{job.where}, seed {seed}"
            key = path.absolute()
            if key in claimed:
                raise BatchError(f"{owner} and {claimed[key]} would both write {path}; "
                                 "put {seed} or {index} in the output name")
            claimed[key] = owner
            exists = path.exists()
            video_io.check_output_path(path, video=video, overwrite=True)  # suffix and directory checks
            if exists and not options["overwrite"] and not batch:
                raise OutputExistsError(f"{path} already exists; use --overwrite to replace it")
            request = GenerationRequest(
                mode=mode, prompt=job.prompt, seed=seed,
                negative_prompt=overrides.get("negative_prompt", options["negative_prompt"]),
                seconds=overrides.get("seconds", options.get("seconds")),
                cfg=overrides.get("cfg", options["cfg"]),
                tau_image=overrides.get("tau_image", options["tau_image"]),
                tau_video=overrides.get("tau_video", options.get("tau_video")),
                prompt_decoration=options["prompt_decoration"],
                guidance=options["guidance"],
                **inputs,
            )
            planned.append(Planned(request, path, index, exists and not options["overwrite"]))
    for item in planned:
        if not item.skip:
            video_io.prepare_output_dir(item.path.parent)
    return planned


def output_metadata(request: GenerationRequest, model: str) -> dict:
    """What the CLI knows about an output; the engine's own metadata is laid over it."""
    fields = dataclasses.asdict(request)
    settings = {k: v for k, v in fields.items()
                if v is not None and k not in ("image", "video") and not (k in ("from_start", "only_new") and not v)}
    return {
        **settings,
        "model": str(model),
        "infinistar_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def emit_record(options: dict, record: dict, reporter: Reporter) -> None:
    if options["json_output"]:
        reporter.result(json.dumps(record, ensure_ascii=False, default=str))
    elif record["status"] == "written":
        reporter.result(record["path"])


def generate(ctx: click.Context, mode: str, options: dict) -> None:
    settings = ctx.obj
    model = resolve_model(ctx, mode, options)
    if options["dry_run"]:
        from infinistar_cli.dry_run import print_estimate

        world = ranks.world_from_env()
        if world is not None and not world.leader:
            return  # under torchrun, rank 0 prints the estimate
        print_estimate(model, mode, options)
        return
    world = ranks.world_from_env()
    if options["parallel"] == "tensor" and world is None:
        raise click.UsageError("--parallel tensor splits one video across the processes torchrun starts: "
                               "run torchrun --nproc-per-node N -m infinistar_cli ... --parallel tensor")
    if world is not None and world.size > 1:
        from infinistar_cli.ranks import run_ranks

        return run_ranks(ctx, mode, model, options, world)
    jobs = collect_jobs(mode, options)
    if mode != "t2i":
        options = {**options, "segments": [*options.get("then", ()), *read_story(options.get("story"))]}

    plan = plan_outputs(mode, model, jobs, options, batch=bool(options["prompt_file"]))
    with Reporter(quiet=settings.quiet, verbose=settings.verbose) as reporter:
        todo = [item for item in plan if not item.skip]
        for item in plan:
            if item.skip:
                reporter.message(f"skipping {item.path}: it already exists (--overwrite regenerates it)")
                emit_record(options, {"status": "skipped", "path": str(item.path), "seed": item.request.seed,
                                "prompt": item.request.prompt, "index": item.index}, reporter)
        if not todo:
            reporter.message("nothing to do: every output already exists")
            return
        start = time.perf_counter()
        pipeline = engine.load_pipeline(model, device=settings.device, on_event=reporter.on_event,
                                        cache_dir=options.get("cache_dir"), offload=options["offload"],
                                        weights=options["weights"], dtype=options["dtype"],
                                        compile=options["compile_blocks"])
        load_seconds = time.perf_counter() - start
        reporter.message(summary.model_line(pipeline.info()))
        if options.get("aspect") == "auto":
            reporter.message("note: --aspect auto; the models were trained at 16:9 (h/w 0.571), "
                             "other aspect templates may look worse")
        reporter.begin_batch(len(todo))
        for number, item in enumerate(todo, start=1):
            label = f"[{number}/{len(todo)}]" if len(todo) > 1 else ""
            reporter.begin_output(label, summary.prompt_echo(label, item.request.seed, item.request.prompt))
            record = generate_one(pipeline, item, model, options, reporter)
            if number == 1:
                record["timings"]["load"] = round(load_seconds, 3)
            # The summary counts the load in the first output only: it happened once.
            shown = {key: value for key, value in record["timings"].items() if key != "load" or number == 1}
            total = record["timings"]["total"] + (load_seconds if number == 1 else 0)
            reporter.finish_output(summary.written_line(label, {**record, "timings": shown}, total))
            emit_record(options, record, reporter)
        if len(plan) > 1:
            reporter.message(summary.done_line(len(todo), len(plan) - len(todo), time.perf_counter() - start))


def generate_one(pipeline: Any, item: Planned, model: str, options: dict, reporter: Any) -> dict:
    """Generate and write one planned output (story segments and extend steps included); the server
    runs its jobs through here too. `reporter` needs on_event, message, begin_output(prefix, header) and prefix."""
    start = time.perf_counter()
    # extend's --seconds and every --then/--story prompt: one run per segment (engine.plan_segments)
    requests = engine.plan_segments(pipeline.preset, item.request, options.get("segments", ()))
    item = dataclasses.replace(item, request=requests[0])
    if len(requests) > 1:
        return write_story(pipeline, item, requests, output_metadata(item.request, model), options, reporter,
                           start) | {"model": str(model)}
    result = pipeline.run(item.request, on_event=reporter.on_event)
    metadata = {**output_metadata(item.request, model), **(result.metadata or {})}
    fps = options.get("fps") or result.fps
    if options.get("fps"):
        metadata["fps"] = fps
    result = dataclasses.replace(result, fps=fps, metadata=metadata)
    note = summary.truncation_note(reporter.prefix, metadata)
    if note:
        reporter.message(note)
    reporter.on_event(Event(stage="write", message=str(item.path)))
    written = time.perf_counter()
    video_io.write_result(result, item.path, overwrite=options["overwrite"], crf=options.get("crf", 18),
                          lossless=options.get("lossless", False))
    end = time.perf_counter()
    timings = {k: v for k, v in (result.timings or {}).items()}
    timings.update(write=round(end - written, 3), total=round(end - start, 3))
    return {"status": "written", "path": str(item.path), "seed": item.request.seed,
            "prompt": item.request.prompt, "index": item.index, "model": str(model), "timings": timings,
            **{key: metadata[name] for key, name in (("frames", "output_frames"), ("height", "height"),
                                                     ("width", "width")) if name in metadata}}
