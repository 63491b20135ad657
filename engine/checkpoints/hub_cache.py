"""Where the official weights live on disk: the variants, the cache root, its layout, what is there.

Files are kept in the Hugging Face cache layout (`<cache>/models--FoundationVision--InfinityStar/
snapshots/<commit>/...`), so `huggingface_hub` tools see them and shared files (VAE, T5) are stored
once for all variants. A download records the expected files with their sizes and hashes in a
manifest next to the cache folders, so status and offline checks never need the network.
Nothing here touches the network (hub_download does) or prints.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Optional

from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects

from engine import presets
from engine.errors import InfinistarError, ModelNotDownloadedError

REPO_ID = "FoundationVision/InfinityStar"
DEFAULT_REVISION = "main"
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


ALL = "all"
# Presets whose weights ship inside the package: they need no download and run offline.
BUILT_IN: dict[str, Path] = {"tiny": Path(__file__).parent.parent / "assets" / "tiny"}
# Every other preset is a download: its transformer folder is the preset's `checkpoint_dir`.
VARIANTS: dict[str, Variant] = {
    name: Variant(name, presets.get(name).checkpoint_dir, int(_APPROX_TRANSFORMER + _APPROX_SHARED))
    for name in presets.names()
    if name not in BUILT_IN
}


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


def repo_folder(cache: Path) -> Path:
    return cache / ("models--" + REPO_ID.replace("/", "--"))


def is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _local_commit(cache: Path, revision: str) -> Optional[str]:
    if is_commit(revision):
        return revision
    ref = repo_folder(cache) / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def _plain_layout(cache: Path, name: str) -> bool:
    """A folder laid out like the official checkpoints_dir (e.g. a git clone of the HF repo)."""
    return (cache / VARIANTS[name].transformer_dir).is_dir()


def _snapshot_root(cache: Path, name: str, revision: str) -> Optional[Path]:
    if _plain_layout(cache, name):
        return cache
    commit = _local_commit(cache, revision)
    snapshots = repo_folder(cache) / "snapshots"
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


@dataclass(frozen=True)
class RemoteFile:
    """One file of the hub repo as the hub lists it."""

    path: str
    size: int
    sha256: Optional[str]  # LFS files
    blob_id: Optional[str]  # git blob sha1


def _manifest_path(cache: Path, commit: str) -> Path:
    return repo_folder(cache) / "infinistar" / f"{commit}.json"


def _read_manifest(cache: Path, commit: str) -> dict[str, dict]:
    path = _manifest_path(cache, commit)
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError):  # absent or damaged: fall back to the index files
        return {}


def write_manifest(cache: Path, commit: str, files: Iterable[RemoteFile]) -> None:
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


def expected_files(cache: Path, root: Path, name: str) -> dict[str, Optional[int]]:
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
    for rel, size in expected_files(cache, root, name).items():
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


# --------------------------------------------------------------------------- remove


def _files_of(root: Path, cache: Path, name: str) -> set[str]:
    return set(expected_files(cache, root, name)) | {
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
    blobs_in_use = {p.resolve() for p in (repo_folder(cache) / "snapshots").rglob("*")
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
        if not any((repo_folder(cache) / "snapshots").iterdir()):
            shutil.rmtree(repo_folder(cache))
    return freed
