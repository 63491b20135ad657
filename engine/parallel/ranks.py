"""Several processes under `torchrun`: who this process is, its device, and the few collectives a
run needs (agreeing on a plan, collecting results). Tensor parallelism itself: engine.parallel.tensor_parallel.

torchrun (or any launcher that sets the same environment) gives every process RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `torch.distributed.init_process_group("env://")` reads
them. Reading the environment needs no torch, so `world_from_env` is cheap to call from the CLI.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping, Optional

from engine.errors import InfinistarError

# A sharded batch gathers its results when the slowest rank is done, which may be hours later;
# the default collective timeout (10-30 minutes) would abort a healthy run.
RESULT_TIMEOUT = timedelta(days=7)


class DistributedError(InfinistarError):
    """A multi-process setup that cannot work (missing GPU, bad torchrun environment, lost rank)."""


@dataclass(frozen=True)
class World:
    """This process's place among `size` processes (global `rank`, `local_rank` on its node)."""

    rank: int
    size: int
    local_rank: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


def world_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[World]:
    """The World torchrun describes in the environment, or None when not started by torchrun."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (start the command with torchrun)") from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise DistributedError(f"inconsistent torchrun environment: RANK {rank}, WORLD_SIZE {size}, LOCAL_RANK {local_rank}")
    return World(rank, size, local_rank)


def rank_device(world: World, name: str = "auto"):
    """The device of this rank: GPU number LOCAL_RANK when CUDA is asked for (or available with
    'auto'), else the one device `name` resolves to (CPU ranks share the CPU)."""
    import torch

    from engine.checkpoints.loading import resolve_device

    name = str(name)
    if name not in ("auto", "cuda"):
        return resolve_device(name)
    count = torch.cuda.device_count()
    if name == "auto" and count == 0:
        return torch.device("cpu")  # several ranks cannot share one MPS device usefully either
    if world.local_rank >= count:
        raise DistributedError(
            f"rank {world.rank} has no GPU: it is process {world.local_rank} on its node "
            f"(LOCAL_RANK), but PyTorch sees {count} GPU(s) there; start at most {count} per node "
            f"(torchrun --nproc-per-node {count}) or use --device cpu")
    return torch.device("cuda", world.local_rank)


_OBJECTS: dict[str, Any] = {}  # the gloo group that carries Python objects, made once per process


def init(world: World, device) -> None:
    """Join the process group (gloo for CPU tensors and objects, NCCL for CUDA tensors)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise DistributedError(f"{' and '.join(missing)} not set: start the command with torchrun")
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    extra = {"device_id": device} if device.type == "cuda" else {}
    try:
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=RESULT_TIMEOUT, **extra)
    except (RuntimeError, ValueError) as error:
        raise DistributedError(f"cannot join the other ranks: {_first_line(error)}") from None
    _OBJECTS["group"] = dist.new_group(backend="gloo", timeout=RESULT_TIMEOUT)


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _OBJECTS.clear()


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def broadcast(value: Any, world: World) -> Any:
    """Rank 0's `value` on every rank (any picklable object)."""
    import torch.distributed as dist

    box = [value if world.leader else None]
    try:
        dist.broadcast_object_list(box, src=0, group=_OBJECTS["group"])
    except RuntimeError as error:
        raise DistributedError(f"lost contact with rank 0: {_first_line(error)}") from None
    return box[0]


def agree(compute: Callable[[], Any], world: World) -> Any:
    """Run `compute` on rank 0 only and hand its value to every rank; an InfinistarError or usage
    error there is raised on every rank (as `Rejected` on the others, so only rank 0 reports it)."""
    outcome: tuple[str, Any] = ("ok", None)
    if world.leader:
        try:
            outcome = ("ok", compute())
        except Exception as error:  # handed to the others below, then raised here
            outcome = ("error", getattr(error, "exit_code", 1))
            broadcast(outcome, world)
            raise
    kind, value = broadcast(outcome, world)
    if kind == "error":
        raise Rejected(value)
    return value


class Rejected(Exception):
    """Rank 0 refused the run and reports why; another rank just exits with `exit_code`."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"rank 0 refused the run (exit status {exit_code})")
        self.exit_code = exit_code


def gather(value: Any, world: World) -> Optional[list]:
    """Every rank's `value`, in rank order, on rank 0 (None elsewhere). A rank that died makes
    this a DistributedError on rank 0, not a hang."""
    import torch.distributed as dist

    box = [None] * world.size if world.leader else None
    try:
        dist.gather_object(value, box, dst=0, group=_OBJECTS["group"])
    except RuntimeError as error:
        raise DistributedError(f"a rank stopped before reporting back ({_first_line(error)})") from None
    return box
