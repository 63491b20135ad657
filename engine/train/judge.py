"""What a viewer sees in a synthetic-shape video: is the object there, which colour, shape, direction.

Stricter than `synthetic.describe` (dominant colour + overall direction): `judge` also asks for
the object at full brightness in the first and in the last frame, names its shape from the
fill ratio of its bounding box (circle pi/4 ~ 0.79, square ~ 1, upward triangle ~ 0.5), and
calls an object that drifts slower than `MIN_SPEED` "still" rather than moving.

Frames are uint8 RGB [T, H, W, 3]. A pixel belongs to the object when its brightest channel is at
least `HALF` (half of full brightness); the object is *present* in a frame when it covers at least
`MIN_AREA` px and at least half of the clip's median covered area (a fading-in object is not
present yet).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.train.synthetic import COLOURS

HALF = 128  # brightest channel >= this: object pixel
MIN_AREA = 30  # px; the smallest training triangle covers ~65 px at 48x64
# Bounding-box fill ratios between the prototypes (triangle 0.5, circle 0.79, square 1).
TRIANGLE_BELOW = 0.66
SQUARE_ABOVE = 0.90
# px per frame of the centroid between the first and the last quarter of the frames; slower is
# "still". The slowest training clip moves 0.75 px per frame (vertically, 17 frames), the slowest
# continuation `evaluate.extend` asks for 0.38; 4 px a second at 16 fps is not a motion one names.
MIN_SPEED = 0.25


@dataclass(frozen=True)
class Verdict:
    """What `judge` saw; `None` fields: nothing to judge (no object)."""

    colour: str | None
    direction: str | None  # "left", "right", "up", "down" or "still" (slower than MIN_SPEED)
    shape: str | None
    first_present: bool  # object at full brightness in frame 0
    last_present: bool  # ... and in the last frame
    fill: float | None  # median bounding-box fill ratio over the frames showing the object

    def matches(self, colour: str, direction: str, shape: str | None = None) -> dict[str, bool]:
        """Per criterion, whether the video shows what was asked (shape only when given)."""
        out = {"colour": self.colour == colour, "direction": self.direction == direction,
               "first": self.first_present, "last": self.last_present}
        if shape is not None:
            out["shape"] = self.shape == shape
        return out


def object_mask(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W] bool: pixels whose brightest channel reaches half of full brightness."""
    return frames.amax(-1) >= HALF


def fill_ratio(mask: torch.Tensor) -> float | None:
    """Covered pixels / bounding-box area of one frame's mask [H, W] (None if empty)."""
    ys, xs = mask.nonzero(as_tuple=True)
    if len(xs) == 0:
        return None
    box = (int(xs.max() - xs.min()) + 1) * (int(ys.max() - ys.min()) + 1)
    return int(mask.sum()) / box


def shape_of(fill: float) -> str:
    """Nearest shape for a bounding-box fill ratio."""
    if fill < TRIANGLE_BELOW:
        return "triangle"
    return "square" if fill > SQUARE_ABOVE else "circle"


def _colour(frames: torch.Tensor, mask: torch.Tensor) -> str | None:
    """Majority vote of the object pixels' nearest named colour, compared at full brightness."""
    if not mask.any():
        return None
    names = list(COLOURS)
    pixels = frames[mask].float()
    pixels = pixels / pixels.amax(-1, keepdim=True)
    votes = torch.cdist(pixels, torch.tensor([COLOURS[n] for n in names])).argmin(-1)
    return names[int(votes.bincount(minlength=len(names)).argmax())]


def _centroid(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(mask.shape[-2]), torch.arange(mask.shape[-1]), indexing="ij")
    w = mask.float().sum(0)
    return torch.stack([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def _direction(mask: torch.Tensor) -> str | None:
    """Direction of the object centroid from the first to the last quarter of the frames, or
    "still" when it moves slower than `MIN_SPEED`."""
    quarter = max(1, mask.shape[0] // 4)
    early, late = mask[:quarter], mask[-quarter:]
    if not early.any() or not late.any():
        return None
    dx, dy = (_centroid(late) - _centroid(early)).tolist()
    if max(abs(dx), abs(dy)) < MIN_SPEED * max(1, mask.shape[0] - quarter):
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def judge(frames: torch.Tensor) -> Verdict:
    """Colour, direction, shape and first/last-frame presence of the object in uint8 frames [T, H, W, 3]."""
    mask = object_mask(frames)
    area = mask.flatten(1).sum(-1)
    need = max(MIN_AREA, 0.5 * float(area.float().median()))
    present = area >= need
    fills = [f for t in range(len(mask)) if present[t] and (f := fill_ratio(mask[t])) is not None]
    fill = float(torch.tensor(fills).median()) if fills else None
    return Verdict(colour=_colour(frames, mask), direction=_direction(mask),
                   shape=shape_of(fill) if fill is not None else None,
                   first_present=bool(present[0]), last_present=bool(present[-1]), fill=fill)
