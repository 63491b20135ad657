"""Peak memory of the released-size VAE decoder: streamed chunks vs one unchunked pass (CPU).

Random weights with the released shapes (built on the meta device, materialised once, small-std
init). Each mode runs in its own subprocess so that the peak RSS readings are independent.

    PYTHONPATH=. python3 benchmarks/vae_decode_memory.py --latent 21x45x80          # 720p, slow on CPU
    PYTHONPATH=. python3 benchmarks/vae_decode_memory.py --latent 5x3x5 --oneshot   # quick

The one-shot (unchunked) pass is only run with --oneshot; an analytic estimate of its largest
live activation set is always printed, next to the same estimate for the chunked decode, so the
estimate can be checked against the measured chunked peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from engine.vae import VideoVAE, decoder_chunks, vae_config

BYTES_PER_FLOAT = 4


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build_random_vae() -> VideoVAE:
    """Released-shape VAE with N(0, 1/fan_in) weights, unit gains, zero biases; one copy only."""
    with torch.device("meta"):
        vae = VideoVAE(vae_config("released"))
    vae.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma") or name == "scale_learnable_parameters":
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, (p[0].numel()) ** -0.5, generator=gen)
    return vae.eval()


def estimate_pass_bytes(frames_out: int, height: int, width: int) -> int:
    """Largest live set of one decoder pass producing `frames_out` frames (released widths).

    It sits in the last up block's DC sampler (192 -> 96 channels, x2 in time and space): its
    input, the normed input and the time-padded copy (3 x 192 ch at half size, half the frames),
    the conv output (768 ch at half size) and the unfolded copy (96 ch at full size).
    The output conv stage (96 ch input + 96 ch padded copy) is smaller. Weights not included.
    """
    full = frames_out * height * width  # elements per channel at full resolution
    sampler_in = 3 * 192 * (full // 8)
    return (sampler_in + 96 * full + 96 * full) * BYTES_PER_FLOAT


def frames_out(latent_frames: int) -> int:
    return 1 + 4 * (latent_frames - 1)


def worker(mode: str, t: int, h: int, w: int) -> dict:
    torch.manual_seed(0)
    vae = build_random_vae()
    latent = torch.randn(1, 64, t, h, w)
    base = rss_bytes()
    start = time.perf_counter()
    chunk_seconds = []
    frames = 0
    with torch.no_grad():
        if mode == "chunked":
            tick = time.perf_counter()
            for chunk in vae.decode_frames(latent):  # streamed uint8 frames, dropped at once
                frames += chunk.shape[0]
                del chunk
                chunk_seconds.append(round(time.perf_counter() - tick, 2))
                tick = time.perf_counter()
        else:
            z = vae.latent_to_vae(latent)
            video = vae.decoder(z, cache=None, split_first=t % 2 == 0)
            frames = video.shape[2]
            del video
    return {
        "mode": mode, "latent": [t, h, w], "frames": frames, "pixels": [16 * h, 16 * w],
        "seconds": round(time.perf_counter() - start, 2), "chunk_seconds": chunk_seconds,
        "weights_and_runtime_rss_gib": base / 2**30,
        "peak_rss_gib": peak_rss_bytes() / 2**30,
        "decode_peak_over_baseline_gib": (peak_rss_bytes() - base) / 2**30,
        "threads": torch.get_num_threads(),
    }


def run_child(mode: str, latent: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--latent", latent, "--worker", mode],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", default="21x45x80", help="latent frames x height x width")
    parser.add_argument("--oneshot", action="store_true", help="also measure one unchunked pass")
    parser.add_argument("--worker", choices=["chunked", "oneshot"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    t, h, w = (int(v) for v in args.latent.lower().split("x"))
    if args.worker:
        print(json.dumps(worker(args.worker, t, h, w)))
        return

    H, W = 16 * h, 16 * w
    chunk_frames = max(4 * (e - s) if s else frames_out(e) for s, e, _ in decoder_chunks(t))
    est_chunk = estimate_pass_bytes(chunk_frames, H, W)
    est_oneshot = estimate_pass_bytes(frames_out(t), H, W)
    print(f"latent {t}x{h}x{w} -> video {frames_out(t)}x{H}x{W}, float32, CPU")
    print(f"analytic largest live set: chunked ({chunk_frames} frames/pass) "
          f"{est_chunk / 2**30:.2f} GiB, one-shot {est_oneshot / 2**30:.2f} GiB "
          f"(ratio {est_oneshot / est_chunk:.1f}x)")
    modes = ["chunked"] + (["oneshot"] if args.oneshot else [])
    for mode in modes:
        r = run_child(mode, args.latent)
        print(f"measured {mode:8s}: {r['frames']} frames in {r['seconds']} s "
              f"({r['threads']} threads); peak RSS {r['peak_rss_gib']:.2f} GiB, of which decode "
              f"{r['decode_peak_over_baseline_gib']:.2f} GiB over the "
              f"{r['weights_and_runtime_rss_gib']:.2f} GiB baseline (weights + runtime)"
              + (f"; seconds per chunk {r['chunk_seconds']}" if r["chunk_seconds"] else ""))


if __name__ == "__main__":
    main()
