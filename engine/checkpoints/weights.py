"""Loading checkpoints into modules built on the meta device, with no second copy of the weights.

Safetensors shards are memory-mapped with `safe_open`; every tensor is read once, converted to the
dtype/device the caller wants, and assigned into the module (`load_state_dict(assign=True)`), shard
by shard. Tensors that need no conversion stay backed by the mapped file (the page cache) and are
read on first use. Keys are checked strictly *before* any data is read, because the official loader
uses strict=False and silently keeps random weights on a name mismatch (spec/pipeline.md §8.13).
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import WeightsError
from engine.model.state_keys import check_keys

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit

DtypeFor = Callable[[str], Optional[torch.dtype]]
Device = Union[str, torch.device]


class SafetensorsFormatError(WeightsError):
    """A safetensors file is truncated or its header is unreadable."""


class UnsafeCheckpointError(WeightsError):
    """A .pth file holds pickled objects that could run code."""


@dataclass(frozen=True)
class LoadReport:
    tensors: int
    bytes: int
    missing: tuple[str, ...] = ()  # only with strict=False: left as they were (meta stays meta)
    unexpected: tuple[str, ...] = ()  # only with strict=False: ignored


# --------------------------------------------------------------------------- safetensors files


def read_safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors header, checked against the file size so that a
    truncated download is caught before any tensor is touched."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= min(size - 8, _MAX_HEADER_BYTES):
            raise SafetensorsFormatError(f"{path.name} is truncated or not a safetensors file ({size} bytes).")
        try:
            header = json.loads(f.read(length))
            entries = {k: v for k, v in header.items() if k != "__metadata__"}
            data_end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, IndexError,
                ValueError) as error:
            raise SafetensorsFormatError(f"{path.name} has a corrupt safetensors header ({error}).") from None
    if 8 + length + data_end > size:
        raise SafetensorsFormatError(
            f"{path.name} is truncated: its header describes {8 + length + data_end} bytes, the file has {size}; "
            "delete it and download again."
        )
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in entries.items()}


@contextmanager
def reading_safetensors(path: str | Path) -> Iterator[Path]:
    """Check `path`'s header against its size, then turn a SafetensorError raised while the block
    reads it into a one-line SafetensorsFormatError naming the file."""
    path = Path(path)
    read_safetensors_header(path)
    try:
        yield path
    except SafetensorError as error:
        raise SafetensorsFormatError(f"{path.name} could not be read: {error}") from None


def load_safetensors_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file; a cut or corrupt file is a SafetensorsFormatError."""
    with reading_safetensors(path):
        return load_file(str(path))


def shard_map(folder: Path) -> dict[str, list[str]]:
    """{shard file name: [tensor names]} from the index, or the single model.safetensors."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise WeightsError(f"{index} is not a valid safetensors index ({error}).") from None
        shards: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            shards.setdefault(file, []).append(name)
        for file in shards:
            if not (folder / file).is_file():
                raise WeightsError(f"{folder / file} is missing (listed in {INDEX_FILE}).")
        return shards
    if (folder / SINGLE_FILE).is_file():
        return {SINGLE_FILE: list(read_safetensors_header(folder / SINGLE_FILE))}
    raise WeightsError(f"No {INDEX_FILE} or {SINGLE_FILE} in {folder}.")


def _target_dtype(key: str, stored: torch.dtype, declared: torch.dtype, dtype_for: Optional[DtypeFor]) -> torch.dtype:
    if not stored.is_floating_point:
        return stored
    chosen = dtype_for(key) if dtype_for is not None else declared
    return chosen or stored


def _module_entries(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.state_dict(keep_vars=True))


def load_safetensors_dir(
    module: nn.Module,
    folder: str | Path,
    dtype_for: Optional[DtypeFor] = None,
    strict: bool = True,
    device: Device = "cpu",
    source: Optional[str] = None,
) -> LoadReport:
    """Load an HF-layout safetensors folder (index + shards, or one model.safetensors) into
    `module`, typically built under `torch.device("meta")`.

    dtype_for(key) -> dtype | None picks each floating tensor's dtype (None: keep the stored one);
    without it a tensor takes the dtype the module declares for that key. Integer tensors keep
    theirs. Non-persistent buffers are not in checkpoints: the caller materialises them.
    `source` names the checkpoint in a mismatch error (default: "Checkpoint <folder>").
    """
    folder = Path(folder)
    shards = shard_map(folder)
    found: dict[str, tuple[int, ...]] = {}
    for file, names in shards.items():
        header = read_safetensors_header(folder / file)
        for name in names:
            if name not in header:
                raise WeightsError(f"{file} does not contain {name}, which {INDEX_FILE} places there.")
            found[name] = header[name][1]
    entries = _module_entries(module)
    missing, unexpected = check_keys(
        {k: tuple(v.shape) for k, v in entries.items()}, found, strict, source or f"Checkpoint {folder}"
    )
    count = nbytes = 0
    for file, names in shards.items():
        part: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(folder / file), framework="pt", device="cpu") as f:
                for name in names:
                    if name not in entries:
                        continue
                    tensor = f.get_tensor(name)
                    dtype = _target_dtype(name, tensor.dtype, entries[name].dtype, dtype_for)
                    part[name] = tensor.to(device=device, dtype=dtype)
        except SafetensorError as error:
            raise SafetensorsFormatError(f"{file} could not be read: {error}") from None
        module.load_state_dict(part, strict=False, assign=True)
        count += len(part)
        nbytes += sum(t.numel() * t.element_size() for t in part.values())
        del part  # drop this shard's references before mapping the next one
    return LoadReport(count, nbytes, tuple(missing), tuple(unexpected))


def load_state_dict_checked(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    dtype_for: Optional[DtypeFor] = None,
    strict: bool = True,
    device: Device = "cpu",
    source: str = "Checkpoint",
) -> LoadReport:
    """Same checks and dtype rules as load_safetensors_dir, for an in-memory state dict (e.g. the
    VAE from load_torch_checkpoint, after the caller has added buffers the file lacks)."""
    entries = _module_entries(module)
    missing, unexpected = check_keys(
        {k: tuple(v.shape) for k, v in entries.items()}, {k: tuple(v.shape) for k, v in state_dict.items()}, strict, source
    )
    part = {
        k: v.to(device=device, dtype=_target_dtype(k, v.dtype, entries[k].dtype, dtype_for))
        for k, v in state_dict.items()
        if k in entries
    }
    module.load_state_dict(part, strict=False, assign=True)
    nbytes = sum(t.numel() * t.element_size() for t in part.values())
    return LoadReport(len(part), nbytes, tuple(missing), tuple(unexpected))


# --------------------------------------------------------------------------- torch .pth files


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    culprit = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (culprit or lines or [type(error).__name__])[0].split(". ")[0].rstrip(".")


def load_torch_checkpoint(path: str | Path, key: Optional[str] = "vae") -> dict[str, torch.Tensor]:
    """Read a torch.save'd checkpoint with weights_only=True (memory-mapped when the file is in the
    zip format) and return `obj[key]` (the whole object when key is None). Pickled code is refused."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist.")
    try:
        # torch warns about the pickle protocol of files it then refuses (or reads): the outcome is
        # reported in one line below, so its warnings would only be noise on stderr.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):  # legacy (non-zip) files cannot be mapped; others are broken
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"Refusing to load {path.name}: it contains pickled objects that are not plain tensors "
            f"and could run code ({_first_line(error)})."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise WeightsError(f"{path.name} is truncated or not a PyTorch checkpoint ({_first_line(error)}).") from None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise WeightsError(f"{path.name} has no {key!r} entry (it has: {keys}).")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path.name}: expected a dict of tensors under {key!r}.")
    return obj


def convert_pth_to_safetensors(pth: str | Path, out: str | Path, key: Optional[str] = "vae") -> Path:
    """Write `torch.load(pth)[key]` as one safetensors file (atomically). Skipped when `out` was
    already made from the same source file (size and mtime recorded in its metadata)."""
    pth, out = Path(pth), Path(out)
    stat = pth.stat()
    stamp = {"source": pth.name, "source_size": str(stat.st_size), "source_mtime_ns": str(stat.st_mtime_ns),
             "key": key or "", "format": "pt"}
    if out.is_file():
        try:
            with safe_open(str(out), framework="pt") as f:
                if f.metadata() == stamp:
                    return out
        except (SafetensorError, OSError):
            pass  # unreadable: convert again
    tensors, storages = {}, set()
    for name, tensor in load_torch_checkpoint(pth, key).items():
        storage = tensor.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory; give each its own.
        tensors[name] = tensor.contiguous() if storage not in storages else tensor.clone()
        storages.add(storage)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=stamp)
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------- writing (tests, benchmarks)


def write_safetensors_dir(
    state_dict: Mapping[str, torch.Tensor], folder: str | Path, max_shard_bytes: int = 8_000_000_000
) -> list[Path]:
    """Write a state dict in the official layout: `model-0000k-of-0000n.safetensors` shards of at
    most max_shard_bytes (a larger single tensor gets its own shard) plus model.safetensors.index.json;
    one shard is written as model.safetensors without an index, as huggingface_hub does."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups: list[list[str]] = [[]]
    size = total = 0
    for name, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        total += nbytes
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    n = len(groups)
    files = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map: dict[str, str] = {}
    for file, names in zip(files, groups):
        tensors, storages = {}, set()
        for name in names:
            tensor = state_dict[name].detach().cpu()
            storage = tensor.untyped_storage().data_ptr()
            tensors[name] = tensor.contiguous() if storage not in storages else tensor.clone()
            storages.add(storage)
            weight_map[name] = file
        tmp = folder / (file + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, folder / file)
    paths = [folder / f for f in files]
    if n > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        paths.append(folder / INDEX_FILE)
    return paths
