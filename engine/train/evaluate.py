"""How well a tiny model folder draws what it is asked, judged as a viewer would (`judge`).

Two fixed sets of prompts and seeds: `TUNING` (sampling defaults and recipes are chosen on it)
and `HELD_OUT` (the test suite's, never used for tuning). Each mode makes one video per prompt
and seed: t2v from the caption; i2v from a rendered first frame (PNG); extend from a rendered
17-frame clip (MP4), judged on the new frames only.

    python -m engine.train.evaluate --model tiny --set held-out
    python -m engine.train.evaluate --model /tmp/tiny-model --set tuning --modes t2v extend --cfg 3 --tau 0.5
"""
from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from engine.media import video_io
from engine.request import GenerationRequest
from engine.train.judge import judge
from engine.train.synthetic import render, sample_scene

Case = tuple[str, str, str]  # colour, shape, direction
SEEN = ("colour", "direction", "first", "last")  # everything but the shape


@dataclass(frozen=True)
class CaseSet:
    prompts: tuple[Case, ...]
    seeds: tuple[int, ...]


# Every shape 4 times, every direction 3 times, every colour at least twice.
HELD_OUT = CaseSet(prompts=(
    ("red", "square", "down"), ("red", "circle", "up"), ("green", "square", "up"),
    ("green", "triangle", "down"), ("blue", "circle", "down"), ("blue", "square", "right"),
    ("yellow", "circle", "left"), ("yellow", "square", "right"), ("white", "circle", "right"),
    ("white", "triangle", "up"), ("red", "triangle", "left"), ("blue", "triangle", "left"),
), seeds=(20, 21, 22))
TUNING = CaseSet(prompts=(
    ("red", "circle", "left"), ("green", "triangle", "right"), ("blue", "square", "down"),
    ("yellow", "triangle", "up"), ("white", "circle", "down"), ("red", "square", "up"),
    ("green", "circle", "left"), ("blue", "triangle", "right"), ("yellow", "square", "left"),
    ("white", "triangle", "down"), ("red", "triangle", "right"), ("blue", "circle", "up"),
), seeds=(5, 6, 7))
SETS = {"held-out": HELD_OUT, "tuning": TUNING}


def caption(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def rendered(i: int, colour: str, shape: str, direction: str, planned: int = 17):
    """(scene, 17-frame uint8 clip [T, H, W, 3]) of a scene whose motion is planned over `planned`
    frames (room to go on for extend)."""
    scene = sample_scene(torch.Generator().manual_seed(200 + i), planned, colour=colour, shape=shape,
                         direction=direction)
    return scene, ((render(scene, 17) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)


def t2v(pipeline, cases: CaseSet, **sampling) -> list[dict]:
    out = []
    for colour, shape, direction in cases.prompts:
        for seed in cases.seeds:
            frames = pipeline.run(GenerationRequest(mode="t2v", prompt=caption(colour, shape, direction),
                                                    seed=seed, **sampling)).frames
            out.append({**judge(frames).matches(colour, direction, shape), "frames": tuple(frames.shape)})
    return out


def i2v(pipeline, cases: CaseSet, folder: Path, **sampling) -> list[dict]:
    """Also whether frame 1 still shows the shape where the given frame had it ("kept")."""
    out = []
    for i, (colour, shape, direction) in enumerate(cases.prompts):
        scene, clip = rendered(i, colour, shape, direction)
        Image.fromarray(clip[0].numpy()).save(folder / f"{i}.png")
        for seed in cases.seeds:
            frames = pipeline.run(GenerationRequest(mode="i2v", prompt=caption(colour, shape, direction),
                                                    seed=seed, image=folder / f"{i}.png", **sampling)).frames
            ys, xs = (frames[1].float().amax(-1) > 80).nonzero(as_tuple=True)
            kept = bool(len(xs)) and bool(abs(xs.float().mean() - scene.x) < 8 and abs(ys.float().mean() - scene.y) < 8)
            out.append({**judge(frames).matches(colour, direction, shape), "kept": kept})
    return out


def extend(pipeline, cases: CaseSet, folder: Path, **sampling) -> list[dict]:
    out = []
    for i, (colour, shape, direction) in enumerate(cases.prompts):
        _, clip = rendered(i, colour, shape, direction, planned=33)
        video_io.write_mp4(clip, folder / f"{i}.mp4", pipeline.preset.fps)
        for seed in cases.seeds:
            frames = pipeline.run(GenerationRequest(mode="extend", prompt=caption(colour, shape, direction),
                                                    seed=seed, video=folder / f"{i}.mp4", only_new=True,
                                                    **sampling)).frames
            out.append({**judge(frames).matches(colour, direction, shape), "frames": tuple(frames.shape)})
    return out


def rate(cases: Sequence[dict], keys: Sequence[str] = SEEN) -> float:
    """Share of the cases right in every one of `keys`."""
    return sum(all(c[k] for k in keys) for c in cases) / len(cases)


def counts(cases: Sequence[dict]) -> dict[str, int]:
    """Per criterion, how many cases are right (plus `seen`: right in all of SEEN)."""
    keys = [k for k in cases[0] if isinstance(cases[0][k], bool)]
    return {"seen": sum(all(c[k] for k in SEEN) for c in cases), **{k: sum(c[k] for c in cases) for k in keys}}


MODES = {"t2v": t2v, "i2v": i2v, "extend": extend}


def main(argv: Sequence[str] | None = None) -> None:
    from engine import load_pipeline
    from engine.errors import InfinistarError

    parser = argparse.ArgumentParser(prog="python -m engine.train.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="preset name or model folder [tiny]")
    parser.add_argument("--set", choices=tuple(SETS), default="tuning")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--tau", type=float, help="tau_image and tau_video")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sampling = {k: v for k, v in {"cfg": args.cfg, "tau_image": args.tau, "tau_video": args.tau}.items()
                if v is not None}
    cases = SETS[args.set]
    total = len(cases.prompts) * len(cases.seeds)
    try:
        pipeline = load_pipeline(args.model, device="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            for mode in args.modes:
                if mode == "t2v":
                    judged = t2v(pipeline, cases, **sampling)
                else:
                    judged = MODES[mode](pipeline, cases, Path(tmp), **sampling)
                print(f"{mode:7s} of {total}: " + " ".join(f"{k}={v}" for k, v in counts(judged).items()), flush=True)
    except InfinistarError as error:
        parser.exit(1, f"error: {error}\n")

if __name__ == "__main__":
    main()
