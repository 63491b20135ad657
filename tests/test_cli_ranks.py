"""`torchrun --nproc-per-node 2 -m infinistar_cli ...` on CPU (gloo): sharded batches, resume, errors.

Ranks are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
so a test can kill one of them by its pid.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_fakes import error_line, invoke
from parallel_helpers import finish, single_process, start_ranks

PROMPTS = ["a red square moving right", "a blue circle", "a green square", "a yellow ball", "a white square"]
TEMPLATE = "out/{index}_{slug}.png"
BATCH = ["--device", "cpu", "t2i", "--model", "tiny", "--prompt-file", "shots.txt", "--seed", "3", "-o", TEMPLATE, "--json"]


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_sharded_batch_writes_each_output_once_as_one_process_would(clean_env):
    (clean_env / "shots.txt").write_text("\n".join(PROMPTS) + "\n")
    ranks = finish(start_ranks(BATCH, 2, clean_env))
    assert [code for code, _, _ in ranks] == [0, 0], ranks[0][2] + ranks[1][2]
    written = [r for _, out, _ in ranks for r in records(out)]
    assert sorted(r["index"] for r in written) == [1, 2, 3, 4, 5]
    assert {r["index"]: r["rank"] for r in written} == {1: 0, 2: 1, 3: 0, 4: 1, 5: 0}  # dealt round-robin
    assert "done: 5 written, 0 skipped, 0 failed (2 ranks)" in ranks[0][2]
    assert "done:" not in ranks[1][2]  # only rank 0 summarises
    outputs = sorted(p.name for p in (clean_env / "out").iterdir())
    assert len([n for n in outputs if n.endswith(".png")]) == 5 and not [n for n in outputs if n.startswith(".")]

    reference = clean_env / "ref"
    reference.mkdir()
    (reference / "shots.txt").write_text("\n".join(PROMPTS) + "\n")
    alone = single_process(BATCH, reference)
    assert alone.returncode == 0, alone.stderr
    for record in written:
        mine, theirs = clean_env / record["path"], reference / record["path"]
        assert np.array_equal(pixels(mine), pixels(theirs)), record["path"]
        meta = {k: v for k, v in json.loads(Path(f"{mine}.json").read_text()).items() if k not in ("created", "timings")}
        ref = {k: v for k, v in json.loads(Path(f"{theirs}.json").read_text()).items() if k not in ("created", "timings")}
        assert meta == ref


@pytest.mark.slow
def test_a_killed_rank_loses_nothing_and_a_rerun_finishes_the_rest(clean_env):
    (clean_env / "shots.txt").write_text("\n".join(PROMPTS) + "\n")
    ranks = start_ranks(BATCH, 2, clean_env)
    rank1_first = clean_env / "out" / "2_a-blue-circle.png"
    deadline = time.monotonic() + 240
    while not rank1_first.exists() and ranks[1].poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    ranks[1].kill()  # mid-way: its second output (4) is not written
    (code0, out0, err0), _ = finish(ranks)
    assert code0 == 1 and "Error: a rank stopped before reporting back" in err0.strip().splitlines()[-1]
    assert "Traceback" not in err0
    before = {p.name: p.stat().st_mtime_ns for p in (clean_env / "out").glob("*.png")}
    assert {"1_a-red-square-moving-right.png", "2_a-blue-circle.png", "3_a-green-square.png",
            "5_a-white-square.png"} <= set(before)
    assert "4_a-yellow-ball.png" not in before
    manifest = next((clean_env / "out").glob(".infinistar-batch-*.json"))
    assert json.loads(manifest.read_text())["world_size"] == 2

    three = finish(start_ranks(BATCH, 3, clean_env))
    assert [code for code, _, _ in three] == [2, 2, 2]
    assert error_line_of(three[0][2]).startswith("Error: this batch was started with 2 ranks and 1 of its outputs")
    assert str(manifest.name) in three[0][2] and not three[1][2].strip() and not three[2][2].strip()

    again = finish(start_ranks(BATCH, 2, clean_env))
    assert [code for code, _, _ in again] == [0, 0], again[0][2]
    statuses = sorted((r["index"], r["status"]) for _, out, _ in again for r in records(out))
    assert statuses == [(1, "skipped"), (2, "skipped"), (3, "skipped"), (4, "written"), (5, "skipped")]
    after = {p.name: p.stat().st_mtime_ns for p in (clean_env / "out").glob("*.png")}
    assert len(after) == 5 and all(after[name] == stamp for name, stamp in before.items())
    assert not manifest.exists()  # complete: the record of the split is gone


def error_line_of(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_a_failing_output_does_not_stop_its_rank_and_the_exit_status_names_it(clean_env):
    prompts = [*PROMPTS[:2], "a FAIL square", *PROMPTS[3:]]  # tests/failing_cli.py makes this one fail
    (clean_env / "shots.txt").write_text("\n".join(prompts) + "\n")
    entry = (str(Path(__file__).parent / "failing_cli.py"),)
    (code0, out0, err0), (code1, out1, err1) = finish(start_ranks(BATCH, 2, clean_env, entry))
    assert (code0, code1) == (1, 0), err0 + err1
    assert sorted(p.name for p in (clean_env / "out").glob("*.png")) == [
        "1_a-red-square-moving-right.png", "2_a-blue-circle.png", "4_a-yellow-ball.png", "5_a-white-square.png"]
    failed = [r for r in records(out0) if r["status"] == "failed"]
    assert [(r["index"], r["rank"]) for r in failed] == [(3, 0)] and "injected failure" in failed[0]["error"]
    assert "done: 4 written, 0 skipped, 1 failed (2 ranks)" in err0
    assert error_line_of(err0).startswith("Error: 1 of 5 outputs failed: output 3 out/3_a-fail-square.png (rank 0: ")


def test_bad_setups_are_one_line_errors(clean_env, monkeypatch):
    result = invoke("--device", "cpu", "t2v", "a fox", "--model", "tiny", "--parallel", "tensor")
    assert result.exit_code == 2 and "--parallel tensor splits one video across the processes torchrun" in error_line(result)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    result = invoke("--device", "cuda", "t2v", "a fox", "--model", "tiny")
    assert result.exit_code == 1
    assert error_line(result).startswith("Error: rank 1 has no GPU: it is process 1 on its node (LOCAL_RANK)")


@pytest.mark.slow
def test_tensor_parallel_over_more_ranks_than_kv_heads_is_refused_before_loading(clean_env):
    args = ["--device", "cpu", "t2v", "a fox", "--model", "tiny", "--parallel", "tensor", "-o", "x.mp4"]
    ranks = finish(start_ranks(args, 3, clean_env))
    assert [code for code, _, _ in ranks] == [1, 1, 1]
    assert "must divide the model's 2 K/V heads (and 4 query heads); start 1 or 2 processes" in error_line_of(ranks[0][2])
    assert not ranks[1][2].strip() and not ranks[2][2].strip() and "loading" not in ranks[0][2] and not (clean_env / "x.mp4").exists()


@pytest.mark.slow
def test_tensor_parallel_writes_one_file_from_rank_0(clean_env, tmp_path):
    from parallel_helpers import sharded_tiny_model

    folder = sharded_tiny_model(tmp_path)
    args = ["--device", "cpu", "t2v", "a red square moving right", "--model", str(folder), "--parallel", "tensor",
            "--seed", "5", "-o", "tp.mp4", "--json"]
    ranks = finish(start_ranks(args, 2, clean_env))
    assert [code for code, _, _ in ranks] == [0, 0], ranks[0][2]
    assert [r["rank"] for r in records(ranks[0][1])] == [0] and not ranks[1][1].strip()
    assert sorted(p.name for p in clean_env.iterdir()) == ["tp.mp4", "tp.mp4.json"]


def test_dry_run_gives_the_per_gpu_estimate_for_every_rank_count(clean_env, monkeypatch):
    from engine import presets
    from engine.measure import memory

    result = invoke("t2v", "--dry-run", "--parallel", "tensor", "--json")
    assert result.exit_code == 0, result.stderr
    peaks = {int(n): v for n, v in json.loads(result.stdout)["per_gpu_peaks"].items()}
    assert list(peaks) == [1, 2, 4, 8] and peaks[1] > peaks[2] > peaks[4] > peaks[8]
    assert peaks[1] == memory.estimate(presets.get("720p"), 81).peak  # one rank: the plain estimate
    one, eight = (memory.estimate(presets.get("720p"), 81, ranks=n) for n in (1, 8))
    assert eight.kv_cache * 8 == one.kv_cache and eight.block_weights < one.block_weights / 7.9
    monkeypatch.setenv("WORLD_SIZE", "4")
    table = invoke("t2v", "--dry-run", "--parallel", "tensor", "--seconds", "10").stdout
    assert "with --parallel tensor for 480p, 161 frames (10 s)" in table and "      4* " in table
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert "start 1, 2, 4 or 8 processes" in error_line(invoke("t2v", "--dry-run", "--parallel", "tensor"))


def test_readme_per_gpu_table_is_what_dry_run_estimates():
    from engine import presets
    from engine.measure import memory

    text = (Path(__file__).parent.parent / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in ("1", "2", "4", "8")]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2", "4", "8"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        ranks = int(cells[0])
        for (name, frames), figures in zip((("720p", 81), ("480p", 161)), (cells[1:4], cells[4:7])):
            e = memory.estimate(presets.get(name), frames, ranks=ranks)
            expected = [e.peak, e.phases["sample"] + memory.RUNTIME_OVERHEAD, e.phases["decode"] + memory.RUNTIME_OVERHEAD]
            assert figures == [f"{v / 2**30:.1f}" for v in expected], (ranks, name)
