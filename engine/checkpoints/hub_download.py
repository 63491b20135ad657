"""Asking the hub what a variant needs and fetching it into the cache (hub_cache's layout).

Transfers go through `huggingface_hub.snapshot_download`, which honours HF_ENDPOINT, HF_TOKEN and
HF_HUB_OFFLINE, retries a dropped connection with a Range request, and skips files already
present; every request has a time-out (hub_timeouts). Nothing here prints; progress goes through
a callback.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.utils import HfHubHTTPError, filter_repo_objects
from tqdm.auto import tqdm

from engine.checkpoints import hub_timeouts
from engine.checkpoints.hub_cache import (DEFAULT_REVISION, REPO_ID, RemoteFile, allow_patterns, format_bytes,
                                          is_commit, repo_folder, resolve_cache_dir, write_manifest)
from engine.errors import DiskSpaceError, DownloadError

HUB_ATTEMPTS = 3  # tries of an API call that got no answer in time (file transfers resume by themselves)


def offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE at import; re-reading lets a late setting count too.
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    # Same reason as offline(): HF_ENDPOINT set after huggingface_hub was imported still counts.
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")



@dataclass(frozen=True)
class DownloadPlan:
    """What `download` will fetch. `present` files are already in the cache with the right size."""

    variant: str
    revision: str
    commit: str
    cache_dir: Path
    allow_patterns: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    present: frozenset[str]

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def to_fetch(self) -> tuple[RemoteFile, ...]:
        return tuple(f for f in self.files if f.path not in self.present)

    @property
    def bytes_to_fetch(self) -> int:
        return sum(f.size for f in self.to_fetch)

    @property
    def snapshot_dir(self) -> Path:
        return repo_folder(self.cache_dir) / "snapshots" / self.commit


def _network_errors() -> tuple[type[BaseException], ...]:
    """HTTP-level failures of whichever client this huggingface_hub version uses."""
    errors: list[type[BaseException]] = [HfHubHTTPError, OSError]
    for module, attr in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _refuse_offline() -> None:
    if offline():
        raise DownloadError("HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it to download.")


def _is_timeout(error: BaseException) -> bool:
    return any("Timeout" in cls.__name__ for cls in type(error).__mro__)


def model_info(revision: str, files_metadata: bool = True) -> Any:
    """The hub's file list at `revision`; a hub that does not answer is asked again, twice."""
    hub_timeouts.install()
    for attempt in range(1, HUB_ATTEMPTS + 1):
        try:
            return HfApi(endpoint=endpoint()).model_info(
                REPO_ID, revision=revision, files_metadata=files_metadata, timeout=hub_timeouts.timeout_s())
        except _network_errors() as error:
            if _is_timeout(error) and attempt < HUB_ATTEMPTS:
                continue
            if _is_timeout(error):
                raise DownloadError(
                    f"The hub at {endpoint()} did not answer within {hub_timeouts.timeout_s():g} s "
                    f"({HUB_ATTEMPTS} tries); check the network or HF_ENDPOINT, or allow more time with "
                    "HF_HUB_DOWNLOAD_TIMEOUT=<seconds>.") from None
            raise DownloadError(
                f"Could not get the file list of {REPO_ID}@{revision} from {endpoint()}: {_first_line(error)}"
            ) from None
    raise AssertionError("unreachable")


def remote_files(info: Any) -> dict[str, RemoteFile]:
    """{path: RemoteFile} of a `model_info` answer (sizes, LFS sha256, git blob ids)."""
    return {s.rfilename: RemoteFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None, s.blob_id)
            for s in info.siblings or []}


def plan_download(
    name: str, revision: str = DEFAULT_REVISION, cache_dir: str | Path | None = None
) -> DownloadPlan:
    """Ask the hub which files the variant needs at `revision`, with sizes; compare with the cache."""
    _refuse_offline()
    cache = resolve_cache_dir(cache_dir)
    patterns = allow_patterns(name)
    info = model_info(revision)
    remote = remote_files(info)
    files = tuple(remote[p] for p in sorted(filter_repo_objects(items=list(remote), allow_patterns=patterns)))
    if not files:
        raise DownloadError(f"{REPO_ID}@{revision} has no files for {name} (patterns {', '.join(patterns)}).")
    snapshot = repo_folder(cache) / "snapshots" / str(info.sha)
    present = frozenset(
        f.path for f in files if (snapshot / f.path).is_file() and (snapshot / f.path).stat().st_size == f.size
    )
    return DownloadPlan(name, revision, str(info.sha), cache, tuple(patterns), files, present)


def check_disk_space(plan: DownloadPlan) -> None:
    """Refuse before fetching anything when the cache's disk cannot hold the missing files."""
    probe = plan.cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < plan.bytes_to_fetch:
        raise DiskSpaceError(
            f"Not enough disk space in {plan.cache_dir}: the download needs {format_bytes(plan.bytes_to_fetch)}, "
            f"{format_bytes(free)} is free. Free some space or pass --cache-dir on another disk."
        )


class _SilentTqdm(tqdm):
    """huggingface_hub draws its own bars; the caller draws ours from the on_progress callback."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


ProgressCallback = Callable[[int, int], None]  # (bytes on disk, bytes in plan); from a worker thread


def _bytes_on_disk(plan: DownloadPlan) -> int:
    """Finished planned files plus partial transfers (`blobs/*.incomplete`)."""
    done = 0
    for f in plan.files:
        path = plan.snapshot_dir / f.path
        if path.is_file():
            done += f.size
    blobs = repo_folder(plan.cache_dir) / "blobs"
    if blobs.is_dir():
        for part in blobs.glob("*.incomplete"):
            try:
                done += part.stat().st_size
            except FileNotFoundError:  # finished between glob and stat
                pass
    return min(done, plan.bytes_total)


def download(plan: DownloadPlan, on_progress: Optional[ProgressCallback] = None, poll_s: float = 0.25) -> Path:
    """Fetch what the plan lacks; returns the snapshot folder. Re-running after an interruption
    fetches only the files not yet complete; with nothing missing, no file is requested."""
    _refuse_offline()
    check_disk_space(plan)
    # Record the branch and the expected files first, so that status and offline look-ups see an
    # interrupted download as partial.
    if not is_commit(plan.revision):
        ref = repo_folder(plan.cache_dir) / "refs" / plan.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(plan.commit)
    write_manifest(plan.cache_dir, plan.commit, plan.files)
    report = on_progress or (lambda done, total: None)
    report(_bytes_on_disk(plan), plan.bytes_total)
    try:
        if plan.to_fetch:
            with hub_timeouts.guarded(lambda: _bytes_on_disk(plan), lambda done: report(done, plan.bytes_total),
                                      poll_s):
                snapshot_download(
                    REPO_ID,
                    etag_timeout=hub_timeouts.timeout_s(),
                    revision=plan.commit,  # pinned: exactly what the plan listed, even if the branch moves
                    cache_dir=str(plan.cache_dir),
                    allow_patterns=list(plan.allow_patterns),
                    endpoint=endpoint(),
                    tqdm_class=_SilentTqdm,
                )
    except (hub_timeouts.HubStalled, *_network_errors()) as error:
        reason = str(error) if isinstance(error, hub_timeouts.HubStalled) else _first_line(error)
        raise DownloadError(f"Download interrupted ({reason}); run the same command again to resume.") from None
    if on_progress is not None:
        on_progress(plan.bytes_total, plan.bytes_total)
    return plan.snapshot_dir


