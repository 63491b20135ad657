"""Checking a downloaded variant: online against the hub's sizes and hashes (sha256 of LFS files,
git blob ids of the others), offline against the recorded sizes, the safetensors headers and the
shards the index files list."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.checkpoints.hub_cache import DEFAULT_REVISION, RemoteFile, expected_files, model_status, resolve_cache_dir
from engine.checkpoints.hub_download import model_info, offline, remote_files
from engine.digests import git_blob_sha1, sha256_file
from engine.errors import DownloadError


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found; `problems` are one line each."""

    variant: str
    ok: bool
    files_checked: int
    hashed: bool  # True when file contents were compared with hashes from the hub
    problems: tuple[str, ...]


def _offline_checks(root: Path, rel: str) -> list[str]:
    from engine.checkpoints.weights import SafetensorsFormatError, read_safetensors_header  # torch: only when verifying

    path = root / rel
    problems = []
    if rel.endswith(".safetensors"):
        try:
            read_safetensors_header(path)
        except SafetensorsFormatError as error:
            problems.append(str(error))
    if rel.endswith("model.safetensors.index.json"):
        shards = set(json.loads(path.read_text())["weight_map"].values())
        problems += [f"{rel}: lists {s}, which is missing" for s in sorted(shards) if not (path.parent / s).is_file()]
    return problems


def verify(
    name: str, cache_dir: str | Path | None = None, online: bool = True, revision: str = DEFAULT_REVISION
) -> VerifyReport:
    """Check a variant's files. Online: sizes and sha256 (LFS) / git sha1 from the hub. Offline:
    recorded sizes, safetensors headers against file sizes, and index shards present."""
    status = model_status(name, cache_dir, revision)
    if status.path is None or status.state == "absent":
        return VerifyReport(name, False, 0, False, (f"{name} is not downloaded",))
    root, cache = status.path, resolve_cache_dir(cache_dir)
    remote: dict[str, RemoteFile] = {}
    online = online and not offline()
    if online:
        try:
            info = model_info(root.name if root.parent.name == "snapshots" else revision)
        except DownloadError as error:
            raise DownloadError(f"{error} To check without the hub: --offline.") from None
        remote = remote_files(info)
    problems: list[str] = []
    checked = 0
    for rel, size in expected_files(cache, root, name).items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        checked += 1
        want = remote.get(rel)
        size = want.size if want else size
        actual = path.stat().st_size
        if size is not None and actual != size:
            problems.append(f"{rel}: size {actual}, expected {size}")
        problems += _offline_checks(root, rel)
        if want is None or actual != size:
            continue
        if want.sha256 and sha256_file(path) != want.sha256:
            problems.append(f"{rel}: sha256 differs from the hub's")
        elif not want.sha256 and want.blob_id and git_blob_sha1(path) != want.blob_id:
            problems.append(f"{rel}: content differs from the hub's")
    return VerifyReport(name, not problems, checked, online, tuple(problems))


