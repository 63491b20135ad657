"""Procedural training videos: one coloured shape moving over a black background, exactly captioned.

Everything is a pure function of a seed, rendered on the fly with torch (a 17-frame 48x64 clip
takes well under a millisecond), so the tiny model needs no data set on disk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
RADIUS = (0.15, 0.2)  # half-size of the shape, as a fraction of the frame height (uniform in range)


@dataclass(frozen=True)
class Scene:
    """One clip: shape of half-size `radius` px centred at (x, y) on frame 0, moving `speed` px/frame."""

    colour: str
    shape: str
    direction: str
    x: float
    y: float
    radius: float
    speed: float
    long_caption: bool = True

    @property
    def caption(self) -> str:
        text = f"a {self.colour} {self.shape} moving {self.direction}"
        return text + " on a black background" if self.long_caption else text


def sample_scene(generator: torch.Generator, frames: int = 17, height: int = 48, width: int = 64,
                 colour: str | None = None, shape: str | None = None, direction: str | None = None) -> Scene:
    """A random scene whose shape stays fully inside the frame for all `frames` frames."""
    def pick(options):
        return options[int(torch.randint(len(options), (), generator=generator))]

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    colour = colour or pick(list(COLOURS))
    shape = shape or pick(SHAPES)
    direction = direction or pick(list(DIRECTIONS))
    dx, dy = DIRECTIONS[direction]
    radius = uniform(*RADIUS) * height
    # Travel about half of the axis it moves along, so the motion is obvious at this resolution.
    span = (width if dx else height) - 2 * radius - 2
    speed = uniform(0.45, 0.7) * span / max(frames - 1, 1)
    travel = speed * (frames - 1)

    def start(size: int, d: int) -> float:
        lo, hi = radius + 1, size - radius - 1
        if d > 0:
            hi -= travel
        elif d < 0:
            lo += travel
        return uniform(lo, max(lo, hi))

    return Scene(colour, shape, direction, start(width, dx), start(height, dy), radius, speed,
                 long_caption=bool(torch.rand((), generator=generator) < 0.5))


def shape_mask(scene: Scene, frames: int, height: int, width: int) -> torch.Tensor:
    """Soft coverage [T, H, W] in [0, 1] (2x2 supersampled edges)."""
    dx, dy = DIRECTIONS[scene.direction]
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    cx = scene.x + dx * scene.speed * t
    cy = scene.y + dy * scene.speed * t
    cover = torch.zeros(frames, height, width)
    for oy in (0.25, 0.75):
        for ox in (0.25, 0.75):
            u = torch.arange(width, dtype=torch.float32)[None, None, :] + ox - cx
            v = torch.arange(height, dtype=torch.float32)[None, :, None] + oy - cy
            r = scene.radius
            if scene.shape == "circle":
                inside = u * u + v * v <= r * r
            elif scene.shape == "square":
                side = r * 0.85  # same area feel as the circle
                inside = (u.abs() <= side) & (v.abs() <= side)
            else:  # upward triangle inscribed in the circle
                inside = (v <= r * 0.5) & (v >= -r) & (u.abs() <= (v + r) / (1.5 * r) * r * math.sqrt(3) / 2)
            cover += inside.float()
    return cover / 4


def render(scene: Scene, frames: int = 17, height: int = 48, width: int = 64) -> torch.Tensor:
    """The clip as pixels [3, T, H, W] in [-1, 1] (the VAE's input range)."""
    cover = shape_mask(scene, frames, height, width)
    rgb = torch.tensor(COLOURS[scene.colour])[:, None, None, None]
    return rgb * cover[None] * 2 - 1


def batch(seed: int, size: int, frames: int = 17, height: int = 48, width: int = 64
          ) -> tuple[torch.Tensor, list[str]]:
    """`size` random clips [B, 3, T, H, W] and their captions, a pure function of `seed`."""
    generator = torch.Generator().manual_seed(seed)
    scenes = [sample_scene(generator, frames, height, width) for _ in range(size)]
    return torch.stack([render(s, frames, height, width) for s in scenes]), [s.caption for s in scenes]


def describe(frames: torch.Tensor, threshold: int = 80) -> tuple[str | None, str | None]:
    """(colour, direction) a viewer would name for uint8 RGB frames [T, H, W, 3]; None if unseen.

    Colour: majority vote of the bright pixels' nearest named colour. Direction: the larger
    component of the bright-pixel centroid's displacement between the first and last quarter
    (frame 0 skipped: the pipeline replaces it by frame 1).
    """
    x = frames.float() / 255
    bright = x.amax(-1) > threshold / 255  # [T, H, W]
    if bright.sum() == 0:
        return None, None
    names = list(COLOURS)
    protos = torch.tensor([COLOURS[n] for n in names])
    pixels = x[bright]  # [N, 3]
    # Compare chromaticity at full brightness, so dim edges vote for their hue.
    pixels = pixels / pixels.amax(-1, keepdim=True)
    votes = torch.cdist(pixels, protos).argmin(-1).bincount(minlength=len(names))
    colour = names[int(votes.argmax())]
    t = frames.shape[0]
    quarter = max(1, (t - 1) // 4)
    early, late = bright[1:1 + quarter], bright[t - quarter:]
    if early.sum() == 0 or late.sum() == 0:
        return colour, None

    def centroid(mask: torch.Tensor) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(mask.shape[1]), torch.arange(mask.shape[2]), indexing="ij")
        w = mask.float().sum(0)
        return torch.stack([(w * xs).sum(), (w * ys).sum()]) / w.sum()

    dx, dy = (centroid(late) - centroid(early)).tolist()
    if abs(dx) >= abs(dy):
        return colour, "right" if dx > 0 else "left"
    return colour, "down" if dy > 0 else "up"
