"""Request bodies (pydantic) and their check against the models, with the CLI's rules and messages.

Types and ranges are the CLI's option types (seed 0..2^32-1, fps 1..240, crf 0..51, sampling
numbers finite and in engine.request's ranges, prompts as long as a prompt file's line); the model
and length checks are engine.validation's, shared with the CLI.
Every error names the field it is about.
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine import presets, validation
from engine import DEFAULT_CRF, InfinistarError, check_length, sampling_value_problem
from infinistar_cli.batch import MAX_LINE_BYTES, SEED_MAX, random_seed

SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX:]\s*(\d{1,5})\s*$")


class FieldError(InfinistarError):
    """A request field the server refuses (HTTP 400 naming `field`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field("", max_length=MAX_LINE_BYTES, description="What to generate (optional with an input_reference).")
    model: Optional[str] = Field(None, description="A model of GET /v1/models [default: the server's].")
    seed: Optional[int] = Field(None, ge=0, le=SEED_MAX, description="Random seed [default: random, reported].")
    cfg: Optional[float] = Field(None, description="Guidance scale, 0 to 1000 [default: the preset's].")
    tau_image: Optional[float] = Field(None, description="Temperature of the image scales, 0.001 to 10.")
    negative_prompt: str = Field("", max_length=MAX_LINE_BYTES, description="What to steer away from.")
    prompt_decoration: Optional[bool] = Field(
        None, description="Add the official duration tag and style suffix [default: on for videos, off for images].")

    @field_validator("cfg", "tau_image", "tau_video", check_fields=False)
    @classmethod
    def _sampling_number(cls, value: Optional[float], info) -> Optional[float]:
        problem = None if value is None else sampling_value_problem(info.field_name, value)
        if problem:
            raise ValueError(problem)
        return value


class VideoParams(Common):
    """POST /v1/videos: JSON, or multipart form fields with an `input_reference` file for i2v/extend."""

    res: Optional[Literal["720p", "480p"]] = Field(None, description="Released preset (instead of model).")
    seconds: Optional[int] = Field(None, ge=1, description="Video length (extend: seconds of new footage).")
    size: Optional[str] = Field(None, description="WxH; with an input_reference, the aspect template W:H.")
    aspect: Optional[str] = Field(None, description="With an input_reference: auto or W:H.")
    tau_video: Optional[float] = Field(None, description="Temperature of the video scales, 0.001 to 10.")
    fps: Optional[int] = Field(None, ge=1, le=240, description="Frame rate of the file [default: the preset's].")
    crf: int = Field(DEFAULT_CRF, ge=0, le=51, description="H.264 quality: lower is better and bigger.")
    then: list[str] = Field(default_factory=list, max_length=100, description="Further segments, one prompt each.")
    from_start: bool = Field(False, description="extend: condition on the first window, not the last.")
    only_new: bool = Field(False, description="extend: write only the new footage.")


class ImageParams(Common):
    """POST /v1/images/generations (OpenAI's fields n, size and response_format included)."""

    n: int = Field(1, ge=1, le=1, description="Images per request (1).")
    size: Optional[str] = Field(None, description="Accepted for OpenAI clients; the model has one size.")
    response_format: Literal["b64_json", "url"] = "b64_json"


def _choose_model(params: Common, mode: str, seconds: Optional[int], served: Optional[str]) -> str:
    res = getattr(params, "res", None)
    if params.model and res:
        raise FieldError("res", "give model or res, not both (res picks a released preset)")
    if params.model:
        if params.model != served and params.model not in presets.names():
            try:
                presets.get(params.model)
            except InfinistarError as error:
                raise FieldError("model", str(error)) from None
        return params.model
    if served and not res:
        return served
    return validation.default_model(mode, seconds, res)


def plan_video(params: VideoParams, mode: str, served: Optional[str]) -> dict:
    """The job of a video request: mode, model, seed and the CLI's option values, all checked."""
    if mode in ("t2v",) and not params.prompt.strip():
        raise FieldError("prompt", "the prompt is empty")
    seconds = None if mode == "extend" else params.seconds
    model = _choose_model(params, mode, seconds, served)
    try:
        check_length(model, mode, params.seconds)
    except InfinistarError as error:
        raise FieldError("seconds", str(error)) from None
    aspect = params.aspect
    if params.size:
        if mode == "t2v":
            raise FieldError("size", "t2v makes the model's own frame size; size (as an aspect W:H) "
                                     "applies only with an input_reference")
        match = SIZE.match(params.size)
        if not match:
            raise FieldError("size", f"size must look like 1280x720, not {params.size!r}")
        aspect = aspect or f"{match[1]}:{match[2]}"
    if aspect is not None:
        if mode == "t2v":
            raise FieldError("aspect", "aspect applies only with an input_reference")
        from engine import aspect_h_div_w

        try:
            aspect_h_div_w(aspect, 1, 1)
        except InfinistarError as error:
            raise FieldError("aspect", str(error)) from None
    if (params.from_start or params.only_new) and mode != "extend":
        raise FieldError("from_start" if params.from_start else "only_new", "applies only when extending a video")
    then = [p.strip() for p in params.then]
    if any(not p for p in then):
        raise FieldError("then", "a segment prompt is empty")
    options = params.model_dump(exclude={"model", "res", "size", "aspect", "then", "seed", "prompt"})
    return {"mode": mode, "model": model, "prompt": params.prompt.strip(), "aspect": aspect,
            "seed": random_seed() if params.seed is None else params.seed, "segments": then, **options}


def plan_image(params: ImageParams, served: Optional[str]) -> dict:
    if not params.prompt.strip():
        raise FieldError("prompt", "the prompt is empty")
    if params.size and not SIZE.match(params.size):
        raise FieldError("size", f"size must look like 1024x1024, not {params.size!r}")
    model = _choose_model(params, "t2i", None, served)
    options = params.model_dump(exclude={"model", "seed", "prompt", "n", "size", "response_format"})
    return {"mode": "t2i", "model": model, "prompt": params.prompt.strip(),
            "seed": random_seed() if params.seed is None else params.seed, "segments": [], **options}
