"""What a model folder says it is: its `infinistar.json`, checked against the config dataclasses,
and the preset it describes (a `base` preset with overrides, the preset whose transformer folder
it holds, or a whole model given field by field). Torch-free: nothing here reads a weight.

`infinistar.json` fields are validated against the frozen dataclasses' type hints (nested
dataclasses take nested objects; lists become tuples); unknown names and wrong types are
one-line errors naming the file.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from engine import presets
from engine.errors import InfinistarError, WeightsError
from engine.presets import Preset

OVERRIDES_FILE = "infinistar.json"


class ModelSourceError(InfinistarError):
    """`--model` names neither a preset nor a usable model folder."""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a JSON value against a field's type hint; lists become tuples for frozen dataclasses."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):  # Optional[X] and X | None
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except WeightsError:
                pass
        raise WeightsError(f"{where}: {value!r} does not fit {hint}.")
    if origin is typing.Literal:
        if value not in args:
            raise WeightsError(f"{where}: {value!r} is not one of {list(args)}.")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise WeightsError(f"{where}: expected a list, got {value!r}.")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], where) for v in value]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise WeightsError(f"{where}: expected {len(args)} items, got {len(value)}.")
            items = [_coerce(v, a, where) for v, a in zip(value, args)]
        else:
            items = [_coerce(v, args[0], where) if args else v for v in value]
        return tuple(items) if origin is tuple else items
    simple = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
    if hint in simple:
        if not isinstance(value, simple[hint]) or (hint is not bool and isinstance(value, bool)):
            raise WeightsError(f"{where}: expected {hint.__name__}, got {value!r}.")
        return float(value) if hint is float else value
    return value


def validate_overrides(data: Any, schema: type, where: str) -> dict[str, Any]:
    """Fields of `data` checked against the dataclass `schema` (see read_model_overrides)."""
    if not isinstance(data, dict):
        raise WeightsError(f"{where}: expected a JSON object.")
    hints = typing.get_type_hints(schema)
    known = [f.name for f in dataclasses.fields(schema)]
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise WeightsError(f"{where}: unknown field {key!r} (known: {', '.join(known)}).")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            out[key] = validate_overrides(value, hint, f"{where}: {key}")
        else:
            out[key] = _coerce(value, hint, f"{where}: {key}")
    return out


def read_model_json(model_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path, parsed object) of a model folder's `infinistar.json`; no file: (path, {})."""
    path = Path(model_dir) / OVERRIDES_FILE
    if not path.is_file():
        return path, {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object.")
    return path, data


def read_model_overrides(model_dir: str | Path, schema: type) -> dict[str, Any]:
    """Fields of `infinistar.json` in a model folder, validated against the dataclass `schema`
    (e.g. the Preset class): unknown names and wrong types are errors. Nested dataclass fields take
    nested objects. No file: {}."""
    path, data = read_model_json(model_dir)
    return validate_overrides(data, schema, str(path)) if data else {}


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """dataclasses.replace, recursing into nested dataclass fields."""
    changes = {
        k: apply_overrides(getattr(config, k), v) if dataclasses.is_dataclass(getattr(config, k)) else v
        for k, v in overrides.items()
    }
    return dataclasses.replace(config, **changes)


# --------------------------------------------------------------------------- the preset a folder describes


@dataclass(frozen=True)
class ModelDescription:
    """What a model is said to be: its preset, and which VAE fields `infinistar.json` states."""

    preset: Preset
    vae_fields: tuple[str, ...] = ()
    source: str = ""  # who says so, for errors: the json file or the preset


def _json_preset(data: dict, where: Path) -> tuple[Optional[Preset], dict]:
    """(base preset named by `base`, or by a `name` that is a preset, or None; the other fields)."""
    data = dict(data)
    base = data.pop("base", None)
    if base is not None and base not in presets.names():
        raise ModelSourceError(f"{where}: base {base!r} is not a preset; known: {', '.join(presets.names())}.")
    if isinstance(data.get("vae"), str):  # a named VAE configuration instead of its fields
        named = presets.VAE_CONFIGS.get(data["vae"])
        if named is None:
            raise ModelSourceError(f"{where}: vae {data['vae']!r} is not a known configuration; known: "
                                   f"{', '.join(presets.VAE_CONFIGS)} (or give its fields as an object).")
        data["vae"] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(named).items()}
    if base is None and data.get("name") in presets.names():
        base = data["name"]  # earlier folders name their preset this way
    return (presets.get(base) if base else None), data


def _blank_preset(overrides: dict, where: Path, folder: Path) -> Preset:
    """The base of a folder that names no preset: the config classes' defaults, for an
    `infinistar.json` that gives every top-level field."""
    hints = typing.get_type_hints(Preset)
    nested = [name for name, hint in hints.items() if dataclasses.is_dataclass(hint)]
    required = [f.name for f in dataclasses.fields(Preset) if f.default is dataclasses.MISSING and f.name not in nested]
    missing = [name for name in required if name not in overrides]
    if missing:
        dirs = ", ".join(presets.get(n).checkpoint_dir for n in presets.names())
        raise ModelSourceError(
            f"{folder} holds no transformer folder of a preset (looked for {dirs}) and {where.name} names no "
            f"\"base\" preset, so it must give every field; it lacks {', '.join(missing)}.")
    return Preset(**{name: overrides[name] for name in required},
                  **{name: hints[name]() for name in nested})


def describe_folder(folder: Path) -> ModelDescription:
    """The preset a model folder starts from (its `infinistar.json` `base`, a `name` that is a preset,
    else the preset whose transformer folder it holds, else the json alone), overrides applied."""
    path, data = read_model_json(folder)
    base, data = _json_preset(data, path)
    overrides = validate_overrides(data, Preset, str(path)) if data else {}
    if base is None:
        found = [presets.get(n) for n in presets.names() if (folder / presets.get(n).checkpoint_dir).is_dir()]
        base = found[0] if found else _blank_preset(overrides, path, folder)
    vae_fields = tuple(overrides.get("vae", {}))
    source = str(path) if data else f"the {base.name!r} preset"
    return ModelDescription(apply_overrides(base, overrides), vae_fields, source)


def preset_for_folder(folder: Path) -> Preset:
    """The preset a model folder starts from, with its `infinistar.json` overrides applied."""
    return describe_folder(folder).preset
