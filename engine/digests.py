"""Content digests of files, read in blocks: sha256 (recorded with a generation's input files,
compared with the hub's LFS hashes) and git's blob sha1 (the hub's id of a small file). Torch-free."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_BLOCK = 1 << 24


def _digest(path: str | Path, digest: Any) -> str:
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return _digest(path, hashlib.sha256())


def git_blob_sha1(path: str | Path) -> str:
    """Git's blob id of a file: sha1 of `blob <size>\\0` followed by its bytes."""
    return _digest(path, hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode()))
