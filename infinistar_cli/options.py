"""The options of t2v, t2i, i2v and extend: the one click option factory, the frozen object a
command builds from them once, and the choice of the model they name (`bench` shares that).

A command hands its `GenerationOptions` down; nothing below it reads click's raw keyword dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click
from click.core import ParameterSource

import engine
from engine import DEFAULT_CRF, DTYPES, GUIDANCE, OFFLOAD_MODES, PARALLEL_MODES, RESOLUTIONS, WEIGHT_MODES
from engine import presets, validation
from infinistar_cli.batch import SEED_MAX
from infinistar_cli.completion import complete_model
from infinistar_cli.config import SamplingNumber, option

# Modes conditioned on an input file: its argument name (and the request field it fills).
INPUTS = {"i2v": "image", "extend": "video"}
SOURCE_RANK = {ParameterSource.COMMANDLINE: 3, ParameterSource.ENVIRONMENT: 2, ParameterSource.DEFAULT_MAP: 1}


@dataclass(frozen=True)
class WriteOptions:
    """How an output file is written (also what the server's jobs set)."""

    overwrite: bool = False
    fps: Optional[int] = None  # None: the preset's
    crf: int = DEFAULT_CRF
    lossless: bool = False


@dataclass(frozen=True)
class GenerationOptions:
    """Every option of one t2v/t2i/i2v/extend invocation. Those all four commands have come first,
    with no default here (click's is the one); those only some modes have default to "not given"."""

    mode: str
    prompt: Optional[str]
    model: Optional[str]
    res: Optional[str]
    seeds: tuple[int, ...]
    output: Optional[str]
    guidance: Optional[str]
    cfg: Optional[float]
    tau_image: Optional[float]
    negative_prompt: str
    prompt_decoration: Optional[bool]
    prompt_file: Optional[str]
    cache_dir: Optional[str]
    overwrite: bool
    offload: str
    weights: str
    dtype: str
    compile_blocks: bool
    parallel: str
    dry_run: bool
    json_output: bool
    # videos (t2v, i2v, extend)
    seconds: Optional[int] = None  # extend: seconds of new footage
    then: tuple[str, ...] = ()
    story: Optional[str] = None
    fps: Optional[int] = None
    crf: int = DEFAULT_CRF
    lossless: bool = False
    tau_video: Optional[float] = None
    # conditioned on an input file (i2v, extend)
    input: Optional[str] = None  # the IMAGE of i2v or the VIDEO of extend
    aspect: Optional[str] = None
    encode_seed: Optional[int] = None
    # extend
    from_start: bool = False
    only_new: bool = False

    @classmethod
    def from_params(cls, mode: str, params: dict[str, Any]) -> "GenerationOptions":
        """From click's keyword arguments of the `mode` command."""
        values = dict(params)
        if mode in INPUTS:
            values["input"] = values.pop(INPUTS[mode])
        return cls(mode=mode, **values)

    @property
    def writing(self) -> WriteOptions:
        """How each output file is written."""
        return WriteOptions(overwrite=self.overwrite, fps=self.fps, crf=self.crf, lossless=self.lossless)

    @property
    def load_options(self) -> dict[str, Any]:
        """The keyword options of `engine.load_pipeline` these options choose."""
        return {"cache_dir": self.cache_dir, "offload": self.offload, "weights": self.weights, "dtype": self.dtype,
                "compile": self.compile_blocks}


def generation_options(mode: str):
    """The click options of the `mode` command: t2v, t2i, or the input-conditioned i2v/extend."""
    video = mode != "t2i"
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
        video and option("--crf", type=click.IntRange(0, 51), default=DEFAULT_CRF, show_default=True,
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


def _is_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.startswith((".", "~")) or Path(model).exists()


def resolve_model(ctx: click.Context, mode: str, model: Optional[str], res: Optional[str],
                  seconds: Optional[int]) -> str:
    """The preset name or model directory to load, checking --res/--seconds/--model against each other."""
    # extend's --seconds counts new footage (engine.check_length checks it against the continuation step).
    length = None if mode == "extend" else seconds
    if model and res:
        model_source, res_source = ctx.get_parameter_source("model"), ctx.get_parameter_source("res")
        if model_source == res_source == ParameterSource.COMMANDLINE:
            raise click.UsageError("give --model or --res, not both (--res picks a released preset)")
        if SOURCE_RANK.get(res_source, 0) > SOURCE_RANK.get(model_source, 0):
            model = None
    if not model:
        model = validation.default_model(mode, length, res)  # without --res, the length decides
    elif not _is_path(model):
        presets.get(model)  # an unknown name fails here, before anything loads
    check_length(model, mode, seconds, "")
    return model


def check_length(model: str, mode: str, seconds: Optional[int], where: str) -> None:
    """Refuse lengths a named preset cannot make before anything is loaded (engine.check_length): an
    unoffered video length is a usage error, extend footage off the continuation step an error."""
    try:
        engine.check_length(model, mode, seconds, where)
    except validation.RequestFieldError as error:
        raise click.UsageError(str(error)) from None
