"""Tensor parallelism on CPU with gloo: 2 ranks compute what one process computes."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from engine import presets
from engine.model.schedule import build_schedule
from golden_utils import GOLDEN_PRESET
from parallel_helpers import free_port, sharded_tiny_model
from parallel_workers import frames, sample, tensor_parallel_rank

RANKS = 2


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The tiny model (2 K/V heads) run in one process, then split over 2 ranks; both records."""
    from engine.generate.pipeline import load_pipeline

    root = tmp_path_factory.mktemp("tp")
    folder = sharded_tiny_model(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipeline = load_pipeline(str(folder), device="cpu")
        single = {**sample(pipeline), "frames": frames(pipeline)}
    finally:
        torch.set_num_threads(threads)
    torch.save(single, root / "single.pt")
    mp.spawn(tensor_parallel_rank, args=(RANKS, free_port(), str(folder), str(root)), nprocs=RANKS, join=True)
    return single, [torch.load(root / f"rank{r}.pt") for r in range(RANKS)]


@pytest.mark.slow
def test_teacher_forced_logits_equal_the_single_process_ones(two_ranks):
    single, ranks = two_ranks
    steps = build_schedule(presets.get("tiny"), 17).num_steps
    for record in ranks:
        assert len(record["forced_logits"]) == len(single["logits"]) == steps
        for step, (mine, ref) in enumerate(zip(record["forced_logits"], single["logits"])):
            assert mine.shape == ref.shape
            # 1e-5 of the logits' scale: summing the row-parallel halves rounds differently in fp32
            # (measured: at most 1.3e-5 on logits up to 10.4; one process on 1 vs 2 threads: 4.8e-6)
            scale = max(1.0, ref.abs().max().item())
            torch.testing.assert_close(mine, ref, atol=1e-5 * scale, rtol=0, msg=f"step {step}")


@pytest.mark.slow
def test_free_sampling_draws_the_same_bits_on_every_rank_and_as_one_process(two_ranks):
    single, ranks = two_ranks
    for step, ref in enumerate(single["bits"]):
        for record in ranks:
            assert torch.equal(record["bits"][step], ref), f"step {step}"
    assert all(torch.equal(record["frames"], single["frames"]) for record in ranks)
    assert single["frames"].shape == (17, 48, 64, 3)


@pytest.mark.slow
def test_each_rank_holds_half_of_the_block_parameters_and_kv_heads(two_ranks):
    _, ranks = two_ranks
    for record in ranks:
        local, whole, norms = record["bytes"]  # norms: the RMSNorm weights, kept whole on every rank
        assert (local - norms) * RANKS == whole - norms and norms < 0.005 * whole
        assert local < 0.502 * whole
        assert record["cache_heads"] == 1  # 2 K/V heads, one per rank: the cache is split with them


def test_heads_that_do_not_divide_are_a_clear_error():
    from engine import presets
    from engine.parallel import tensor_parallel

    with pytest.raises(tensor_parallel.ParallelError, match="must divide the model's 1 K/V head .* start 1 process"):
        tensor_parallel.check_ranks(GOLDEN_PRESET.transformer, 2)
    assert tensor_parallel.valid_rank_counts(presets.get("720p").transformer) == [1, 2, 4, 8]
