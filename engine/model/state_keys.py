"""The one strict check of a checkpoint's tensor names and shapes against a module's.

Loading is `load_state_dict(strict=True)` with module names equal to the official keys, so a
mismatch must be an error before any data is read, said in one line: how many names are missing,
unexpected or mis-shaped, with the first few of each. Torch-free: it compares {name: shape} tables.
"""
from __future__ import annotations

from typing import Mapping

from engine.errors import WeightsMismatchError


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … +{len(keys) - limit}" if len(keys) > limit else "")


def check_keys(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], strict: bool, source: str,
    target: str = "the model", error: type[Exception] = WeightsMismatchError,
) -> tuple[list[str], list[str]]:
    """Compare {name: shape} tables; raise `error` with a one-line diff (missing and unexpected
    names only when strict; wrong shapes always): "<source> does not match <target>: ...".
    Returns (missing, unexpected)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    parts = []
    if strict and missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if strict and unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if wrong:
        shapes = [f"{k}: file {list(found[k])}, model {list(expected[k])}" for k in wrong]
        parts.append(f"{len(wrong)} wrong shape ({_names(shapes, 2)})")
    if parts:
        raise error(f"{source} does not match {target}: " + "; ".join(parts) + ".")
    return missing, unexpected
