"""Where the official weights live on disk, and how they get there.

Files are kept in the Hugging Face cache layout (`<cache>/models--FoundationVision--InfinityStar/
snapshots/<commit>/...`), so `huggingface_hub` tools see them and shared files (VAE, T5) are stored
once for all variants. Transfers go through `huggingface_hub.snapshot_download`, which honours
HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE, retries a dropped connection with a Range request, and
skips files already present. Nothing here prints; progress goes through a callback.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.utils import HfHubHTTPError, filter_repo_objects
from tqdm.auto import tqdm

from engine.checkpoints import hub_timeouts
from engine.errors import DiskSpaceError, DownloadError, InfinistarError, ModelNotDownloadedError

REPO_ID = "FoundationVision/InfinityStar"
DEFAULT_REVISION = "main"
HUB_ATTEMPTS = 3  # tries of an API call that got no answer in time (file transfers resume by themselves)
VAE_FILE = "infinitystar_videovae.pth"
T5_DIR = "text_encoder/flan-t5-xl-official"
SHARED_PATTERNS = (VAE_FILE, f"{T5_DIR}/*")

# Approximate sizes, used only for messages before the hub has been asked. The transformer is
# stored in fp32 (8.77 B params, spec/pipeline.md §1.6); the VAE size is its fp32 parameter count;
# the T5 folder is the full flan-t5-xl fp32 checkpoint (~11.4 GB, inferred from its 2-shard index).
_GB = 1_000_000_000
_APPROX_TRANSFORMER = 35.1 * _GB
_APPROX_SHARED = 0.75 * _GB + 11.4 * _GB


@dataclass(frozen=True)
class Variant:
    """One downloadable model: its transformer folder plus the shared VAE and text encoder."""

    name: str
    transformer_dir: str
    approx_bytes: int

    @property
    def allow_patterns(self) -> tuple[str, ...]:
        return (f"{self.transformer_dir}/*",) + SHARED_PATTERNS


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("720p", "infinitystar_8b_720p_weights", int(_APPROX_TRANSFORMER + _APPROX_SHARED)),
        Variant("480p", "infinitystar_8b_480p_weights", int(_APPROX_TRANSFORMER + _APPROX_SHARED)),
        Variant("interact", "InfinityStarInteract_24K_iters", int(_APPROX_TRANSFORMER + _APPROX_SHARED)),
    )
}
ALL = "all"
# Presets whose weights ship inside the package: they need no download and run offline.
BUILT_IN: dict[str, Path] = {"tiny": Path(__file__).parent.parent / "assets" / "tiny"}


def variant_names(name: str) -> list[str]:
    """Expand "all" and check the name."""
    if name == ALL:
        return list(VARIANTS)
    if name not in VARIANTS:
        raise InfinistarError(f"Unknown model variant {name!r}; choose one of {', '.join(VARIANTS)}, all.")
    return [name]


def _one_variant(name: str) -> Variant:
    if name == ALL:
        raise InfinistarError("Name one variant here, not 'all'.")
    return VARIANTS[variant_names(name)[0]]


def allow_patterns(name: str) -> list[str]:
    """Patterns of the repo files a variant (or "all") needs, without duplicates."""
    patterns: list[str] = []
    for v in variant_names(name):
        patterns += [p for p in VARIANTS[v].allow_patterns if p not in patterns]
    return patterns


def format_bytes(n: float) -> str:
    """Decimal units, as disk vendors and the hub report sizes."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- cache location


def resolve_cache_dir(cache_dir: str | Path | None = None, config_value: str | Path | None = None) -> Path:
    """Cache root. Precedence: explicit argument (--cache-dir) > INFINISTAR_CACHE > config file >
    the Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub)."""
    chosen = cache_dir or os.environ.get("INFINISTAR_CACHE") or config_value or constants.HF_HUB_CACHE
    return Path(os.path.expandvars(str(chosen))).expanduser()


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE at import; re-reading lets a late setting count too.
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _endpoint() -> str:
    # Same reason as _offline: HF_ENDPOINT set after huggingface_hub was imported still counts.
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _repo_folder(cache: Path) -> Path:
    return cache / ("models--" + REPO_ID.replace("/", "--"))


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _local_commit(cache: Path, revision: str) -> Optional[str]:
    if _is_commit(revision):
        return revision
    ref = _repo_folder(cache) / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def _plain_layout(cache: Path, name: str) -> bool:
    """A folder laid out like the official checkpoints_dir (e.g. a git clone of the HF repo)."""
    return (cache / VARIANTS[name].transformer_dir).is_dir()


def _snapshot_root(cache: Path, name: str, revision: str) -> Optional[Path]:
    if _plain_layout(cache, name):
        return cache
    commit = _local_commit(cache, revision)
    snapshots = _repo_folder(cache) / "snapshots"
    if commit is None and revision == DEFAULT_REVISION and snapshots.is_dir():
        # no ref recorded (e.g. fetched by commit with another tool): a lone snapshot is the one
        only = [p for p in snapshots.iterdir() if p.is_dir()]
        commit = only[0].name if len(only) == 1 else None
    if commit is None:
        return None
    root = snapshots / commit
    return root if root.is_dir() else None


# --------------------------------------------------------------------------- manifests

# Written at download time next to the HF cache folders: the expected file list (with sizes and
# hashes from the hub) so that status and offline checks never need the network.


def _manifest_path(cache: Path, commit: str) -> Path:
    return _repo_folder(cache) / "infinistar" / f"{commit}.json"


def _read_manifest(cache: Path, commit: str) -> dict[str, dict]:
    path = _manifest_path(cache, commit)
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError):  # absent or damaged: fall back to the index files
        return {}


def _write_manifest(cache: Path, commit: str, files: Iterable["RemoteFile"]) -> None:
    merged = _read_manifest(cache, commit)
    merged.update({f.path: {"size": f.size, "sha256": f.sha256, "blob_id": f.blob_id} for f in files})
    path = _manifest_path(cache, commit)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"repo": REPO_ID, "commit": commit, "files": merged}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _expected_from_indexes(root: Path, name: str) -> dict[str, Optional[int]]:
    """Expected files (size unknown) when no manifest exists: derived from the index files."""
    expected: dict[str, Optional[int]] = {VAE_FILE: None}
    for folder, fallback in ((VARIANTS[name].transformer_dir, None), (T5_DIR, "config.json")):
        index = root / folder / "model.safetensors.index.json"
        expected[f"{folder}/model.safetensors.index.json"] = None
        if fallback:
            expected[f"{folder}/{fallback}"] = None
        if index.is_file():
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                expected[f"{folder}/{shard}"] = None
    return expected


def _expected_files(cache: Path, root: Path, name: str) -> dict[str, Optional[int]]:
    manifest = _read_manifest(cache, root.name) if root.parent.name == "snapshots" else {}
    chosen = list(filter_repo_objects(items=list(manifest), allow_patterns=list(VARIANTS[name].allow_patterns)))
    if any(p.startswith(VARIANTS[name].transformer_dir + "/") for p in chosen):
        return {p: manifest[p]["size"] for p in chosen}
    return _expected_from_indexes(root, name)  # this variant was not fetched by `download`


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class ModelStatus:
    """Local state of one variant. state: complete | partial | absent."""

    variant: str
    state: Literal["complete", "partial", "absent"]
    path: Optional[Path]
    bytes_on_disk: int
    missing: tuple[str, ...]


def model_status(name: str, cache_dir: str | Path | None = None, revision: str = DEFAULT_REVISION) -> ModelStatus:
    """What of a variant is on disk; never touches the network. A file whose size differs from
    the recorded one counts as missing."""
    _one_variant(name)
    cache = resolve_cache_dir(cache_dir)
    root = _snapshot_root(cache, name, revision)
    if root is None:
        return ModelStatus(name, "absent", None, 0, ())
    present, missing, own_present = 0, [], False
    for rel, size in _expected_files(cache, root, name).items():
        path = root / rel
        actual = path.stat().st_size if path.is_file() else None
        if actual is None or (size is not None and actual != size):
            missing.append(rel)
            continue
        present += actual
        own_present |= rel.startswith(VARIANTS[name].transformer_dir + "/")
    if not own_present:
        return ModelStatus(name, "absent", root, present, tuple(missing))
    return ModelStatus(name, "partial" if missing else "complete", root, present, tuple(missing))


def resolve_model_dir(name: str, cache_dir: str | Path | None = None, revision: str = DEFAULT_REVISION) -> Path:
    """Folder holding the variant's files in the official layout (transformer folder, VAE .pth,
    text_encoder/). Raises ModelNotDownloadedError, without network access, when incomplete."""
    status = model_status(name, cache_dir, revision)
    if status.state == "complete":
        assert status.path is not None
        return status.path
    where = resolve_cache_dir(cache_dir)
    detail = "is not downloaded" if status.state == "absent" else f"is incomplete ({len(status.missing)} file{'s' if len(status.missing) != 1 else ''} missing)"
    size = format_bytes(VARIANTS[name].approx_bytes)
    raise ModelNotDownloadedError(
        f"InfinityStar {name} {detail} in {where}; run `infinistar download {name}` (~{size})."
    )


def variant_paths(name: str, root: Path) -> dict[str, Path]:
    """The three pieces a pipeline loads, inside a folder from resolve_model_dir."""
    return {
        "transformer": root / VARIANTS[name].transformer_dir,
        "vae": root / VAE_FILE,
        "text_encoder": root / T5_DIR,
    }


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: Optional[str]  # LFS files
    blob_id: Optional[str]  # git blob sha1


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
        return _repo_folder(self.cache_dir) / "snapshots" / self.commit


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
    if _offline():
        raise DownloadError("HF_HUB_OFFLINE is set, so nothing can be downloaded; unset it to download.")


def _is_timeout(error: BaseException) -> bool:
    return any("Timeout" in cls.__name__ for cls in type(error).__mro__)


def _model_info(revision: str, files_metadata: bool = True) -> Any:
    """The hub's file list at `revision`; a hub that does not answer is asked again, twice."""
    hub_timeouts.install()
    for attempt in range(1, HUB_ATTEMPTS + 1):
        try:
            return HfApi(endpoint=_endpoint()).model_info(
                REPO_ID, revision=revision, files_metadata=files_metadata, timeout=hub_timeouts.timeout_s())
        except _network_errors() as error:
            if _is_timeout(error) and attempt < HUB_ATTEMPTS:
                continue
            if _is_timeout(error):
                raise DownloadError(
                    f"The hub at {_endpoint()} did not answer within {hub_timeouts.timeout_s():g} s "
                    f"({HUB_ATTEMPTS} tries); check the network or HF_ENDPOINT, or allow more time with "
                    "HF_HUB_DOWNLOAD_TIMEOUT=<seconds>.") from None
            raise DownloadError(
                f"Could not get the file list of {REPO_ID}@{revision} from {_endpoint()}: {_first_line(error)}"
            ) from None
    raise AssertionError("unreachable")


def plan_download(
    name: str, revision: str = DEFAULT_REVISION, cache_dir: str | Path | None = None
) -> DownloadPlan:
    """Ask the hub which files the variant needs at `revision`, with sizes; compare with the cache."""
    _refuse_offline()
    cache = resolve_cache_dir(cache_dir)
    patterns = allow_patterns(name)
    info = _model_info(revision)
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = tuple(
        RemoteFile(p, siblings[p].size or 0, siblings[p].lfs.sha256 if siblings[p].lfs else None, siblings[p].blob_id)
        for p in sorted(filter_repo_objects(items=list(siblings), allow_patterns=patterns))
    )
    if not files:
        raise DownloadError(f"{REPO_ID}@{revision} has no files for {name} (patterns {', '.join(patterns)}).")
    snapshot = _repo_folder(cache) / "snapshots" / str(info.sha)
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
    blobs = _repo_folder(plan.cache_dir) / "blobs"
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
    if not _is_commit(plan.revision):
        ref = _repo_folder(plan.cache_dir) / "refs" / plan.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(plan.commit)
    _write_manifest(plan.cache_dir, plan.commit, plan.files)
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
                    endpoint=_endpoint(),
                    tqdm_class=_SilentTqdm,
                )
    except (hub_timeouts.HubStalled, *_network_errors()) as error:
        reason = str(error) if isinstance(error, hub_timeouts.HubStalled) else _first_line(error)
        raise DownloadError(f"Download interrupted ({reason}); run the same command again to resume.") from None
    if on_progress is not None:
        on_progress(plan.bytes_total, plan.bytes_total)
    return plan.snapshot_dir


# --------------------------------------------------------------------------- verify / remove


@dataclass(frozen=True)
class VerifyReport:
    variant: str
    ok: bool
    files_checked: int
    hashed: bool  # True when file contents were compared with hashes from the hub
    problems: tuple[str, ...]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


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
    online = online and not _offline()
    if online:
        try:
            info = _model_info(root.name if root.parent.name == "snapshots" else revision)
        except DownloadError as error:
            raise DownloadError(f"{error} To check without the hub: --offline.") from None
        remote = {s.rfilename: RemoteFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None, s.blob_id)
                  for s in info.siblings or []}
    problems: list[str] = []
    checked = 0
    for rel, size in _expected_files(cache, root, name).items():
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
        if want.sha256 and _sha256(path) != want.sha256:
            problems.append(f"{rel}: sha256 differs from the hub's")
        elif not want.sha256 and want.blob_id and _git_blob_sha1(path) != want.blob_id:
            problems.append(f"{rel}: content differs from the hub's")
    return VerifyReport(name, not problems, checked, online, tuple(problems))


def _files_of(root: Path, cache: Path, name: str) -> set[str]:
    return set(_expected_files(cache, root, name)) | {
        str(p.relative_to(root)) for p in (root / VARIANTS[name].transformer_dir).rglob("*") if p.is_file() or p.is_symlink()
    }


def remove(name: str, cache_dir: str | Path | None = None, revision: str = DEFAULT_REVISION) -> int:
    """Delete a variant's files from the cache, keeping files another present variant still uses.
    Returns the bytes freed."""
    cache = resolve_cache_dir(cache_dir)
    root = None
    for v in variant_names(name):
        if _plain_layout(cache, v):
            raise InfinistarError(f"{cache} is a plain model folder, not the download cache; delete files there yourself.")
        root = root or _snapshot_root(cache, v, revision)
    if root is None:
        raise InfinistarError(f"InfinityStar {name} is not in {cache}; nothing to remove.")
    doomed = set().union(*(_files_of(root, cache, v) for v in variant_names(name)))
    for other in set(VARIANTS) - set(variant_names(name)):
        if (root / VARIANTS[other].transformer_dir).is_dir():
            doomed -= _files_of(root, cache, other)
    freed = 0
    doomed_paths = {root / rel for rel in doomed}
    blobs_in_use = {p.resolve() for p in (_repo_folder(cache) / "snapshots").rglob("*")
                    if p.is_symlink() and p not in doomed_paths}
    for rel in sorted(doomed):
        path = root / rel
        if not (path.is_file() or path.is_symlink()):
            continue
        target = path.resolve()
        freed += target.stat().st_size if target.is_file() else 0
        path.unlink()
        if target != path and target.is_file() and target not in blobs_in_use:
            target.unlink()
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()
        if not any((_repo_folder(cache) / "snapshots").iterdir()):
            shutil.rmtree(_repo_folder(cache))
    return freed
