"""Redraw docs/tiny_strip.png: every other frame of a tiny-model t2v video, enlarged 2x.

    python docs/make_tiny_strip.py ["a red square moving right"] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from engine.generate.pipeline import load_pipeline
from engine.request import GenerationRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompt", nargs="?", default="a red square moving right")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("tiny_strip.png"))
    args = parser.parse_args()
    frames = load_pipeline("tiny", device="cpu").run(
        GenerationRequest(mode="t2v", prompt=args.prompt, seed=args.seed)).frames[::2]
    gap = 2
    t, h, w, _ = frames.shape
    strip = torch.full((2 * h, t * (2 * w + gap) - gap, 3), 96, dtype=torch.uint8)
    for i, frame in enumerate(frames):
        big = frame.repeat_interleave(2, 0).repeat_interleave(2, 1)
        strip[:, i * (2 * w + gap): i * (2 * w + gap) + 2 * w] = big
    Image.fromarray(strip.numpy()).save(args.out, optimize=True)
    print(f"wrote {args.out} ({strip.shape[1]}x{strip.shape[0]})")


if __name__ == "__main__":
    main()
