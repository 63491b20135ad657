"""Peak memory of the released-size VAE decoder: streamed chunks vs one unchunked pass (CPU).

Random weights with the released shapes (built on the meta device, materialised once, small-std
init). Each mode runs in its own subprocess so that the peak RSS readings are independent.

    PYTHONPATH=. python3 benchmarks/vae_decode_memory.py --latent 21x45x80          # 720p, slow on CPU
    PYTHONPATH=. python3 benchmarks/vae_decode_memory.py --latent 5x3x5 --oneshot   # quick

The one-shot (unchunked) pass is only measured with --oneshot. Every measurement is printed next
to an analytic estimate (largest live activation set, plus the causal caches when chunked) and
extrapolated to --extrapolate (default: the 720p latent) with the measured/estimated ratio;
extrapolated lines say so. On CPU, RSS also counts oneDNN reorder copies and allocator slack.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from engine.model.vae import VideoVAE, decoder_chunks, vae_config

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


def estimate_activation_bytes(frames_out: int, height: int, width: int) -> int:
    """Largest live activation set of one decoder pass producing `frames_out` frames (released).

    It sits in the last up block's DC sampler (192 -> 96 channels, x2 in time and space): its
    input and normed input (192 ch at half size, half the frames: 24 floats per output pixel
    each) and the unfolded output (96). The conv output only exists slice by slice. The output
    conv stage (96 ch, normalised in place) is smaller. Weights and conv temporaries excluded.
    """
    return (24 + 24 + 96) * frames_out * height * width * BYTES_PER_FLOAT


def estimate_cache_bytes(height: int, width: int) -> int:
    """Causal caches of a chunked decode: two input frames per 3x3x3 conv (33 convs, released).

    Per output pixel: 17 convs x 384 ch at 1/8 size, 7 x 384 at 1/4, 7 x 192 at 1/2, the output
    conv's 96 ch at full size and conv_in's 16 ch at 1/8: (204 + 336 + 672 + 192 + 0.5) floats.
    Checked against the real cache dict (1404.5 floats per output pixel).
    """
    return int(1404.5 * height * width * BYTES_PER_FLOAT)


def estimate_bytes(mode: str, latent_frames: int, height: int, width: int) -> int:
    if mode == "oneshot":
        return estimate_activation_bytes(frames_out(latent_frames), height, width)
    chunk_frames = max(4 * (e - s) if s else frames_out(e) for s, e, _ in decoder_chunks(latent_frames))
    return estimate_activation_bytes(chunk_frames, height, width) + estimate_cache_bytes(height, width)


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
    parser.add_argument("--extrapolate", default="21x45x80",
                        help="latent size to extrapolate the measured peak to")
    parser.add_argument("--worker", choices=["chunked", "oneshot"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    t, h, w = (int(v) for v in args.latent.lower().split("x"))
    if args.worker:
        print(json.dumps(worker(args.worker, t, h, w)))
        return

    gib = 2**30
    ex_t, ex_h, ex_w = (int(v) for v in args.extrapolate.lower().split("x"))
    print(f"latent {t}x{h}x{w} -> video {frames_out(t)}x{16 * h}x{16 * w}, float32, CPU")
    for mode in ["chunked"] + (["oneshot"] if args.oneshot else []):
        r = run_child(mode, args.latent)
        est = estimate_bytes(mode, t, 16 * h, 16 * w)
        measured = r["decode_peak_over_baseline_gib"] * gib
        print(f"measured {mode:8s}: {r['frames']} frames in {r['seconds']} s ({r['threads']} threads); "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB = {r['weights_and_runtime_rss_gib']:.2f} GiB "
              f"baseline (weights + runtime) + {measured / gib:.2f} GiB decode "
              f"(analytic estimate {est / gib:.2f} GiB)"
              + (f"; seconds per chunk {r['chunk_seconds']}" if r["chunk_seconds"] else ""))
        ex = estimate_bytes(mode, ex_t, 16 * ex_h, 16 * ex_w)
        print(f"  EXTRAPOLATED to latent {args.extrapolate}: analytic {ex / gib:.1f} GiB, "
              f"scaled by this run's measured/estimate ratio {measured / est:.2f}: "
              f"{ex * measured / est / gib:.1f} GiB (decode only, float32)")
    if not args.oneshot:
        ex = estimate_bytes("oneshot", ex_t, 16 * ex_h, 16 * ex_w)
        print(f"one-shot (unchunked) pass, analytic only: {estimate_bytes('oneshot', t, 16 * h, 16 * w) / gib:.2f} GiB "
              f"here, {ex / gib:.1f} GiB at latent {args.extrapolate}")


if __name__ == "__main__":
    main()
