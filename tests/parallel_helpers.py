"""Multi-process test helpers: the tiny model in a sharded folder, and ranks started like torchrun does.

The shipped tiny model has 4 query heads and 2 K/V heads, so it splits over 2 ranks by heads.
`sharded_tiny_model` writes its weights as several shards with an index, the layout of the
released checkpoints, so the ranks load what a real multi-GPU run loads.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from engine import presets
from engine.checkpoints.loading import TINY_DIR, TINY_TEXT_WEIGHTS, VAE_SAFETENSORS
from engine.checkpoints.weights import write_safetensors_dir

ROOT = Path(__file__).resolve().parents[1]
TINY = presets.get("tiny")


def sharded_tiny_model(root: Path) -> Path:
    folder = root / "tiny-sharded"
    if folder.is_dir():
        return folder
    state = load_file(str(TINY_DIR / TINY.checkpoint_dir / "model.safetensors"))
    write_safetensors_dir(state, folder / TINY.checkpoint_dir, max_shard_bytes=1_000_000)  # sharded, with an index
    shutil.copy(TINY_DIR / VAE_SAFETENSORS, folder / VAE_SAFETENSORS)
    (folder / TINY_TEXT_WEIGHTS).parent.mkdir(parents=True)
    shutil.copy(TINY_DIR / TINY_TEXT_WEIGHTS, folder / TINY_TEXT_WEIGHTS)
    (folder / "infinistar.json").write_text(json.dumps({"name": "tiny"}))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, size: int, port: int) -> dict:
    """The environment torchrun gives rank `rank` of `size` on one node (one thread each)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINISTAR_")}
    env.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
    return env


def start_ranks(args: list[str], size: int, cwd: Path, entry: tuple[str, ...] = ("-m", "infinistar_cli")
                ) -> list[subprocess.Popen]:
    """`python -m infinistar_cli ARGS` as ranks 0..size-1 of one job (what torchrun starts)."""
    port = free_port()
    return [subprocess.Popen([sys.executable, *entry, *args], cwd=cwd, env=rank_env(r, size, port),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(size)]


def single_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The same command without torchrun, on one thread like each rank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFINISTAR_") and k != "WORLD_SIZE"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-m", "infinistar_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def finish(ranks: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of every rank."""
    out = []
    for process in ranks:
        stdout, stderr = process.communicate(timeout=timeout)
        out.append((process.returncode, stdout, stderr))
    return out
