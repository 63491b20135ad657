"""`python -m engine.train`: train a preset's VAE, transformer and (tiny) text encoder on the
synthetic shape videos and write them in the official folder layout `engine.checkpoints.loading`
reads (`infinitystar_videovae.safetensors`, `<checkpoint_dir>/model.safetensors`,
`text_encoder/tiny.safetensors`).

Written for any preset config, sized for the tiny one (CPU minutes); it uses the inference
modules and key names unchanged.

    python -m engine.train --preset tiny --out /tmp/tiny-model --seed 0
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model

from engine import presets
from engine.checkpoints.loading import TINY_TEXT_WEIGHTS, VAE_SAFETENSORS, load_vae
from engine.model.text_encoder import TextEncoder
from engine.model.transformer import InfinityTransformer
from engine.model.vae import VideoVAE
from engine.presets import Preset
from engine.train.config import TrainConfig
from engine.train.transformer_phase import train_transformer
from engine.train.vae_phase import train_vae


def plain_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unshared contiguous copies (safetensors refuses aliased tensors, e.g. the VAE's mask alias)."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def save_model_folder(folder: str | Path, preset: Preset, transformer: InfinityTransformer | None = None,
                      vae: VideoVAE | None = None, text: TextEncoder | None = None) -> Path:
    """Write the given parts in the official layout that `engine.checkpoints.loading.load_components` reads."""
    folder = Path(folder)
    if transformer is not None:
        (folder / preset.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        save_file(plain_copies(transformer.state_dict()), str(folder / preset.checkpoint_dir / "model.safetensors"),
                  metadata={"format": "pt"})
    if vae is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(plain_copies(vae.state_dict()), str(folder / VAE_SAFETENSORS), metadata={"format": "pt"})
    if text is not None:
        (folder / TINY_TEXT_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
        save_model(text.model, str(folder / TINY_TEXT_WEIGHTS))
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", required=True, help="model folder to write (official layout)")
    parser.add_argument("--phase", choices=("all", "vae", "transformer"), default="all",
                        help="'transformer' reuses the VAE already in --out")
    parser.add_argument("--resume-vae", type=Path, help="fine-tune the VAE of this model folder")
    parser.add_argument("--resume-transformer", type=Path,
                        help="fine-tune the transformer and tiny text encoder of this model folder")
    defaults = TrainConfig()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = TrainConfig(**{k: getattr(args, k) for k in vars(defaults)})
    except ValueError as error:
        parser.error(str(error))
    preset = presets.get(args.preset)
    start = time.perf_counter()

    def log(phase: str, step: int, metrics: dict) -> None:
        if step % 25 == 0:
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            logging.info("%s step %d %s (%.0f s)", phase, step, shown, time.perf_counter() - start)

    if args.phase in ("all", "vae"):
        start_vae = load_vae(preset, args.resume_vae, torch.device("cpu")) if args.resume_vae else None
        vae = train_vae(preset, cfg, log, start_vae, lambda v: save_model_folder(args.out, preset, vae=v))
        save_model_folder(args.out, preset, vae=vae)
        logging.info("VAE done after %.0f s", time.perf_counter() - start)
    else:
        vae = load_vae(preset, Path(args.out), torch.device("cpu"))
    if args.phase in ("all", "transformer"):
        start_model = start_text = None
        if args.resume_transformer:
            start_model = InfinityTransformer(preset.transformer)
            start_model.load_state_dict(load_file(str(args.resume_transformer / preset.checkpoint_dir / "model.safetensors")))
            start_text = TextEncoder.tiny(weights=args.resume_transformer / TINY_TEXT_WEIGHTS)
        model, text = train_transformer(preset, vae, cfg, log, start_text, start_model)
        save_model_folder(args.out, preset, transformer=model, text=text)
    logging.info("done after %.0f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
