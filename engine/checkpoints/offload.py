"""Keeping weights off the GPU until they are needed (`--offload none|model|blocks`).

- none: every component lives on the compute device.
- model: components live in (pinned) CPU memory; only the one in use (T5 while encoding, the
  transformer while sampling, the VAE while decoding) has a copy on the GPU.
- blocks: as `model`, and the transformer's blocks are streamed: each block is copied to the
  GPU just before it runs, the next one is prefetched on a side CUDA stream (the copy overlaps
  the current block's compute) and the copy is dropped after the block ran. The transformer's
  small remaining tensors (embeddings, heads) stay on the GPU.

Weights are read-only at inference, so "offloading" never copies anything back: the CPU copy is
the home of each tensor, a GPU copy is installed for use and simply dropped afterwards.
On a CPU (or MPS) device there is nothing to offload to and both modes do nothing.
"""
from __future__ import annotations

from functools import partial
from typing import Mapping

import torch
from torch import nn

from engine.errors import InfinistarError, check_choice

from engine.choices import OFFLOAD_MODES


class OffloadModeError(InfinistarError):
    """An unknown --offload mode."""


def check_mode(mode: str) -> str:
    return check_choice(mode, OFFLOAD_MODES, OffloadModeError, "offload mode")


def active(mode: str, device: torch.device) -> bool:
    """Whether `mode` does anything on `device` (only CUDA has a separate memory to save)."""
    return check_mode(mode) != "none" and device.type == "cuda"


def home_device(mode: str, device: torch.device) -> torch.device:
    """Where components are loaded: the CPU when offloading, else the compute device."""
    return torch.device("cpu") if active(mode, device) else device


class HomeCopy:
    """A module's parameters and buffers kept in CPU memory (pinned when `pin`), with device
    copies installed for use (`install(fetch(device))`) and dropped again (`release()`)."""

    def __init__(self, module: nn.Module, pin: bool = False) -> None:
        self.slots: list[tuple[nn.Module, str, str, int]] = []
        self.home: list[torch.Tensor] = []
        index: dict[int, int] = {}  # tied tensors (one tensor in two modules) are kept once
        for mod in module.modules():
            for kind in ("_parameters", "_buffers"):
                for name, tensor in getattr(mod, kind).items():
                    if tensor is None:
                        continue
                    if id(tensor) not in index:
                        index[id(tensor)] = len(self.home)
                        home = tensor.detach().cpu()
                        self.home.append(home.pin_memory() if pin else home)
                    self.slots.append((mod, kind, name, index[id(tensor)]))
                    # Swap in the home copy now, so an unpinned original can be freed early.
                    home = self.home[index[id(tensor)]]
                    getattr(mod, kind)[name] = nn.Parameter(home, requires_grad=False) if kind == "_parameters" else home
        self.release()  # once more, so that tied tensors share one Parameter again

    def fetch(self, device: torch.device, non_blocking: bool = False) -> list[torch.Tensor]:
        """Fresh device copies of every home tensor (always copies, also to the CPU)."""
        return [t.to(device, non_blocking=non_blocking, copy=True) for t in self.home]

    def install(self, tensors: list[torch.Tensor]) -> None:
        params: dict[int, nn.Parameter] = {}  # one Parameter per tensor keeps ties tied
        for mod, kind, name, i in self.slots:
            tensor = tensors[i]
            if kind == "_parameters":
                if i not in params:
                    params[i] = nn.Parameter(tensor, requires_grad=False)
                tensor = params[i]
            getattr(mod, kind)[name] = tensor

    def release(self) -> None:
        """Put the home tensors back; the device copies are freed once nothing uses them."""
        self.install(self.home)


class BlockStreamer:
    """Forward hooks that stream `blocks` from their home copies to `device`, one ahead."""

    def __init__(self, blocks: list[nn.Module], device: torch.device, pin: bool = False) -> None:
        self.device = device
        self.homes = [HomeCopy(block, pin) for block in blocks]
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending: dict[int, tuple[list[torch.Tensor], object]] = {}
        self.resident = 0  # blocks with a device copy right now (prefetched or running)
        self.max_resident = 0
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(partial(self._before, i)))
            self.handles.append(block.register_forward_hook(partial(self._after, i)))

    def _prefetch(self, i: int) -> None:
        if i in self.pending:
            return
        if self.stream is None:
            self.pending[i] = (self.homes[i].fetch(self.device), None)
        else:
            # Start the copy only after the work queued so far: it then overlaps the next block.
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                tensors = self.homes[i].fetch(self.device, non_blocking=True)
                done = torch.cuda.Event()
                done.record(self.stream)
            self.pending[i] = (tensors, done)
        self.resident += 1
        self.max_resident = max(self.max_resident, self.resident)

    def _before(self, i: int, module: nn.Module, args: tuple) -> None:
        self._prefetch(i)
        tensors, done = self.pending.pop(i)
        if done is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(done)
            for t in tensors:  # memory made on the side stream, used on the main one
                t.record_stream(main)
        self.homes[i].install(tensors)
        self._prefetch((i + 1) % len(self.homes))

    def _after(self, i: int, module: nn.Module, args: tuple, output: object) -> None:
        self.homes[i].release()
        self.resident -= 1

    def drop_prefetched(self) -> None:
        """Free the copy prefetched for the next forward (e.g. before the VAE decodes)."""
        self.resident -= len(self.pending)
        self.pending.clear()

    def remove(self) -> None:
        """Detach the hooks; the blocks keep their home (CPU) tensors."""
        self.drop_prefetched()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class Offloader:
    """Keeps only the component in use on the device; see the module docstring."""

    def __init__(self, components: Mapping[str, nn.Module], device: torch.device,
                 streamer: BlockStreamer | None = None, pin: bool = False) -> None:
        self.device = device
        self.homes = {name: HomeCopy(module, pin) for name, module in components.items()}
        self.streamer = streamer
        self.in_use: str | None = None

    def use(self, name: str) -> None:
        """Make component `name` resident on the device and drop the previous one's copy."""
        if name == self.in_use:
            return
        if self.in_use in self.homes:
            self.homes[self.in_use].release()
        if self.streamer is not None and name != "transformer":
            self.streamer.drop_prefetched()
        if name in self.homes:
            home = self.homes[name]
            home.install(home.fetch(self.device))
        self.in_use = name


def attach(mode: str, device: torch.device, transformer: nn.Module, text: nn.Module,
           vae: nn.Module) -> Offloader | None:
    """Set up `mode` for components loaded on the CPU (`home_device`); None when inactive.

    `text` is the text encoder's torch module. With "blocks" the transformer's non-block tensors
    are moved to the device for good and its blocks streamed.
    """
    if not active(mode, device):
        return None
    return build(mode, device, transformer, text, vae, pin=True)


def build(mode: str, device: torch.device, transformer: nn.Module, text: nn.Module, vae: nn.Module,
          pin: bool = False) -> Offloader:
    """The Offloader of `attach`, on any device (a CPU device exercises the same code paths)."""
    modules = {"text": text, "vae": vae}
    streamer = None
    if mode == "model":
        modules["transformer"] = transformer
    else:
        blocks = transformer.layers()
        streamer = BlockStreamer(blocks, device, pin)
        in_blocks = {id(t) for b in blocks for t in (*b.parameters(), *b.buffers())}
        for module in transformer.modules():
            for kind in ("_parameters", "_buffers"):
                for name, tensor in getattr(module, kind).items():
                    if tensor is not None and id(tensor) not in in_blocks:
                        moved = tensor.detach().to(device)
                        getattr(module, kind)[name] = (
                            nn.Parameter(moved, requires_grad=False) if kind == "_parameters" else moved)
    return Offloader(modules, device, streamer, pin)
