"""Planning the outputs of a run before anything loads: which prompts (PROMPT, --prompt-file, the
input file), then per prompt and seed the request, the output path from the template, and whether
the file exists. A typo, a clash of two outputs on one path or an existing file fails here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from engine import GenerationRequest, OutputExistsError, video_io
from infinistar_cli.batch import BatchError, Job, check_prompt, check_template, output_path, random_seed, read_prompt_file
from infinistar_cli.options import INPUTS, GenerationOptions, check_length


@dataclass(frozen=True)
class Planned:
    """One output: what to generate and where; `skip` marks a batch output whose file exists;
    `segments` are the prompts of further segments (--then, --story) in the same file."""

    request: GenerationRequest
    path: Path
    index: int
    skip: bool
    segments: tuple[str, ...] = ()


def collect_jobs(options: GenerationOptions) -> list[Job]:
    """The prompts of the run, each with its own settings (a --prompt-file line may set some)."""
    mode, prompt, prompt_file = options.mode, options.prompt, options.prompt_file
    if prompt is not None and prompt_file:
        raise click.UsageError("give a PROMPT or --prompt-file, not both")
    if prompt_file and (options.then or options.story):
        raise click.UsageError("--then/--story make one long video; they cannot be combined with --prompt-file")
    if mode in INPUTS:
        from engine import aspect_h_div_w, check_input  # torch: imported only when needed

        check_input(mode, options.input)  # a missing or unreadable input fails before the model loads
        if options.aspect:
            aspect_h_div_w(options.aspect, 1, 1)
    if prompt_file:
        return read_prompt_file(prompt_file, "t2i" if mode == "t2i" else "t2v")
    if prompt is None and mode in INPUTS:
        return [Job(prompt="", where="command line")]  # the input alone conditions the video
    if prompt is None:
        raise click.UsageError("missing PROMPT (or --prompt-file FILE)")
    return [Job(prompt=check_prompt(prompt, ""), where="command line")]


def plan_outputs(options: GenerationOptions, model: str, jobs: list[Job], segments: tuple[str, ...]) -> list[Planned]:
    """Seeds, requests and output paths of every output; existing ones are skipped in a batch
    and an error otherwise (under torchrun rank 0 plans for every rank: infinistar_cli.ranks)."""
    mode, batch = options.mode, bool(options.prompt_file)
    video = mode != "t2i"
    suffix = video_io.VIDEO_SUFFIX if video else video_io.IMAGE_SUFFIX
    source = options.input
    inputs = {} if source is None else {INPUTS[mode]: Path(source), "aspect": options.aspect}
    if source is not None:
        inputs["encode_seed"] = options.encode_seed
    if mode == "extend":
        inputs.update(from_start=options.from_start, only_new=options.only_new)
    if options.output:
        check_template(options.output, "--output")
    planned: list[Planned] = []
    claimed: dict[Path, str] = {}
    for job in jobs:
        overrides = dict(job.overrides)
        check_length(model, mode, overrides.get("seconds"), job.where)
        for seed in job.seeds or options.seeds or (random_seed(),):
            index = len(planned) + 1
            template = job.output or options.output
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
            if exists and not options.overwrite and not batch:
                raise OutputExistsError(f"{path} already exists; use --overwrite to replace it")
            request = GenerationRequest(
                mode=mode, prompt=job.prompt, seed=seed,
                negative_prompt=overrides.get("negative_prompt", options.negative_prompt),
                seconds=overrides.get("seconds", options.seconds),
                cfg=overrides.get("cfg", options.cfg),
                tau_image=overrides.get("tau_image", options.tau_image),
                tau_video=overrides.get("tau_video", options.tau_video),
                prompt_decoration=options.prompt_decoration,
                guidance=options.guidance,
                **inputs,
            )
            planned.append(Planned(request, path, index, exists and not options.overwrite, segments))
    for item in planned:
        if not item.skip:
            video_io.prepare_output_dir(item.path.parent)
    return planned
