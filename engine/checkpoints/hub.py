"""The weights hub, as the front ends and the loader use it: one import for its three rooms.

- hub_cache: the variants (derived from the presets), the cache root and layout, what is on disk
  (`model_status`, `resolve_model_dir`) and `remove`; never touches the network.
- hub_download: asking the hub for a variant's files (`plan_download`) and fetching them (`download`).
- hub_verify: checking what is on disk against the hub's hashes, or offline (`verify`).
"""
from __future__ import annotations

from engine.checkpoints.hub_cache import (ALL, BUILT_IN, DEFAULT_REVISION, REPO_ID, SHARED_PATTERNS, T5_DIR, VAE_FILE,
                                          VARIANTS, ModelStatus, RemoteFile, Variant, allow_patterns, format_bytes,
                                          model_status, remove, repo_folder, resolve_cache_dir, resolve_model_dir,
                                          variant_names, variant_paths)
from engine.checkpoints.hub_download import DownloadPlan, ProgressCallback, check_disk_space, download, plan_download
from engine.checkpoints.hub_verify import VerifyReport, verify

__all__ = [
    "ALL", "BUILT_IN", "DEFAULT_REVISION", "REPO_ID", "SHARED_PATTERNS", "T5_DIR", "VAE_FILE", "VARIANTS",
    "ModelStatus", "RemoteFile", "Variant", "allow_patterns", "format_bytes", "model_status", "remove",
    "repo_folder", "resolve_cache_dir", "resolve_model_dir", "variant_names", "variant_paths",
    "DownloadPlan", "ProgressCallback", "check_disk_space", "download", "plan_download",
    "VerifyReport", "verify",
]
