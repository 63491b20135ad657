"""What each rank of the tensor-parallel tests computes (started by torch.multiprocessing.spawn)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

PROMPT = "a red square moving right"
SEED = 5


def sample(pipeline, forced_bits=None) -> dict:
    """Free sampling (or teacher forcing with `forced_bits`) of one t2v request: bits and raw
    logits of every step, through the pipeline's own components."""
    from engine.generate.pipeline import frames_for, sampling_for
    from engine.model.schedule import build_schedule
    from engine.request import GenerationRequest
    from engine.generate.sampling import TextCondition, sample_latent

    request = GenerationRequest(mode="t2v", prompt=PROMPT, seed=SEED)
    schedule = build_schedule(pipeline.preset, frames_for(pipeline.preset, request.mode, request.seconds))
    features = pipeline.components.text.encode([pipeline.prompt_text(request, schedule.num_frames)])
    generator = torch.Generator().manual_seed(SEED)
    forced = {} if forced_bits is None else {"forced_bits": forced_bits, "forced_scales": len(schedule.infos)}
    result = sample_latent(pipeline.components.transformer, schedule, TextCondition(features[0]),
                           sampling_for(pipeline.preset, request), generator, keep_bits=True, trace=True, **forced)
    return {"bits": result.bits, "logits": [t.raw_logits for t in result.trace]}


def frames(pipeline) -> torch.Tensor:
    from engine.request import GenerationRequest

    return pipeline.run(GenerationRequest(mode="t2v", prompt=PROMPT, seed=SEED)).frames


def tensor_parallel_rank(rank: int, size: int, port: int, folder: str, out: str) -> None:
    """Load `folder` split over `size` ranks and save what this rank computed to out/rank{r}.pt."""
    from engine.parallel import ranks
    from engine.parallel import tensor_parallel
    from engine.generate.pipeline import load_pipeline

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ranks.init(ranks.World(rank, size, rank), torch.device("cpu"))
    try:
        pipeline = load_pipeline(folder, device="cpu", parallel="tensor")
        reference = torch.load(Path(out) / "single.pt")
        record = {**sample(pipeline), "forced_logits": sample(pipeline, reference["bits"])["logits"],
                  "frames": frames(pipeline), "bytes": tensor_parallel.block_parameter_bytes(pipeline.components.transformer),
                  "cache_heads": pipeline.components.transformer.layers()[0].attn.num_kv_heads}
        torch.save(record, Path(out) / f"rank{rank}.pt")
    finally:
        ranks.finish()
