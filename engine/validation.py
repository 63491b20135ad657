"""Checks of a request's model and length shared by every front end (the CLI, the server).

They run before anything is loaded and need no torch, so a typo never costs a model load. An
error names the request field it is about (`field`), which the CLI turns into a usage error and
the server into a 400 answer naming the field; the message text is the same for both.
"""
from __future__ import annotations

from typing import Optional

from engine import presets
from engine.errors import InfinistarError

# The released text-to-video presets `--res` (the server's `res`) chooses from, in order of preference.
RESOLUTIONS = ("720p", "480p")


class RequestFieldError(InfinistarError):
    """A request field with a value no model can serve; `field` names it (seconds, model, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def preset_seconds(model: str) -> Optional[tuple[int, ...]]:
    """Whole-second video lengths a registered preset offers; None for model directories."""
    if model not in presets.names():
        return None
    preset = presets.get(model)
    return tuple((f - 1) // preset.fps for f in preset.frames if f > 1 and (f - 1) % preset.fps == 0)


def default_model(mode: str, seconds: Optional[int], res: Optional[str] = None) -> str:
    """The released preset a request without a model uses: `res`, else 720p (480p for 10 s videos,
    which exist only there, and for extend, the preset trained to continue videos)."""
    if res:
        return res
    if mode == "extend":
        return "480p"
    offering = [name for name in RESOLUTIONS if seconds in (preset_seconds(name) or ())]
    return offering[0] if mode != "t2i" and seconds and offering else RESOLUTIONS[0]


def check_seconds(model: str, seconds: Optional[int], where: str = "") -> None:
    """Refuse lengths a named preset does not offer, saying which preset makes them."""
    allowed = preset_seconds(str(model))
    if seconds is None or allowed is None or seconds in allowed:
        return
    offers = " or ".join(str(s) for s in allowed)
    other = [name for name in RESOLUTIONS if seconds in (preset_seconds(name) or ())]
    hint = ""
    if other and model in RESOLUTIONS:
        hint = f"; use --res {other[0]} (or leave out --res)"
    elif other:
        hint = f"; the {other[0]} model makes them (--model {other[0]})"
    prefix = f"{where}: " if where else ""
    raise RequestFieldError(
        "seconds", f"{prefix}{seconds} s videos are not available at {model}, which makes {offers} s videos{hint}")
