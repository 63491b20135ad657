"""Same seed, same pixels? Runs the real CLI (tiny model) many times per mode under CPU load.

For each mode (t2v, t2i, i2v, extend) and each thread setting (the default, and OMP_NUM_THREADS=1)
the same command runs `--runs` times as separate processes while `--load` busy-loop processes
keep the cores occupied; every output is decoded (MP4 with PyAV, PNG with Pillow) and hashed.
Prints, per mode, the number of distinct decoded outputs per thread setting and over all runs
(1 everywhere = reproducible, 1 thread and default threads alike).

    PYTHONPATH=. python3 benchmarks/reproducibility.py --runs 10          # ~80 CLI runs
    PYTHONPATH=/path/to/other/checkout python3 benchmarks/reproducibility.py --runs 3   # compare
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BUSY = "while True: pass"
PROMPT = "a red square moving right"


def decoded_hash(path: Path) -> str:
    if path.suffix == ".png":
        from PIL import Image

        pixels = np.asarray(Image.open(path).convert("RGB"))
    else:
        import av

        with av.open(str(path)) as container:
            pixels = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return hashlib.sha256(pixels.tobytes()).hexdigest()[:12]


def make_inputs(folder: Path) -> dict[str, Path]:
    """A still and a 2 s clip (tiny extend needs at least 17 frames) that stay the same for every run."""
    from PIL import Image

    y, x = np.mgrid[0:96, 0:128]
    still = np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(still).save(folder / "still.png")
    frames = np.stack([np.roll(still[::2, ::2], 2 * t, axis=1) for t in range(33)])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from engine.media.video_io import write_mp4

    write_mp4(frames, folder / "clip.mp4", 16, overwrite=True, lossless=True)
    return {"image": folder / "still.png", "video": folder / "clip.mp4"}


def command(mode: str, inputs: dict[str, Path], output: Path) -> list[str]:
    base = [sys.executable, "-m", "infinistar_cli", "--quiet", "--device", "cpu"]
    inputs_for = {"t2v": [PROMPT], "t2i": [PROMPT], "i2v": [str(inputs["image"]), PROMPT],
                  "extend": [str(inputs["video"]), PROMPT]}
    return base + [mode, *inputs_for[mode], "--model", "tiny", "--seed", "5", "-o", str(output), "--overwrite"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy-loop processes")
    parser.add_argument("--modes", default="t2v,t2i,i2v,extend")
    args = parser.parse_args()
    load = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.load)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            inputs = make_inputs(folder)
            print(f"{args.runs} runs per mode and thread setting, {args.load} busy processes; "
                  f"distinct decoded outputs:")
            for mode in args.modes.split(","):
                hashes: dict[str, list[str]] = {}
                start = time.perf_counter()
                for threads in ("default", "1"):
                    env = dict(os.environ)
                    if threads == "1":
                        env["OMP_NUM_THREADS"] = "1"
                    for run in range(args.runs):
                        output = folder / f"{mode}_{threads}_{run}.{'png' if mode == 't2i' else 'mp4'}"
                        done = subprocess.run(command(mode, inputs, output), env=env, capture_output=True, text=True)
                        if done.returncode:
                            raise SystemExit(f"{mode} failed: {done.stderr.strip()[-500:]}")
                        hashes.setdefault(threads, []).append(decoded_hash(output))
                every = hashes["default"] + hashes["1"]
                print(f"  {mode:7s} default threads: {len(set(hashes['default']))}  1 thread: "
                      f"{len(set(hashes['1']))}  all {len(every)} runs: {len(set(every))}  "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        for process in load:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
