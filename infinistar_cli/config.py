"""Settings from a TOML file and `INFINISTAR_*` environment variables.

Precedence: command-line flag > environment variable > config file > built-in default. Click
provides that order itself (envvar, then `default_map`, then default); this module only reads
and validates the file and turns it into a `default_map`.

File layout: top-level keys apply to every command that has the option (`device`, `cfg`,
`crf`, ...); a table named after a command (`[t2v]`, `[t2i]`) applies to that command only and
wins over the top level. Keys are option names, with `-` or `_`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import click
from click.core import ParameterSource

from engine import InfinistarError, sampling_value_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "INFINISTAR_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
# Options that describe one invocation rather than a preference, so they have no config key.
NOT_CONFIGURABLE = {"help", "version", "config", "prompt_file", "then", "story", "from_start", "only_new", "dry_run"}


class ConfigError(InfinistarError):
    """The config file cannot be read or holds an unknown key or a value of the wrong type."""


def envvar(flag: str) -> str:
    """Environment variable of an option: `--tau-image` -> `INFINISTAR_TAU_IMAGE`."""
    return ENV_PREFIX + flag.split("/")[0].lstrip("-").replace("-", "_").upper()


class EnvOption(click.Option):
    """An option whose bad value, when it came from its environment variable, is reported under
    the variable's name (`INFINISTAR_CFG: ...`), not as if it had been typed as `--cfg`."""

    def handle_parse_result(self, ctx: click.Context, opts: Any, args: list) -> Any:
        try:
            return super().handle_parse_result(ctx, opts, args)
        except click.BadParameter as error:
            if ctx.get_parameter_source(self.name) != ParameterSource.ENVIRONMENT:
                raise
            name = self.envvar if isinstance(self.envvar, str) else " or ".join(self.envvar or ())
            raise click.UsageError(f"{name}: {error.message}", ctx) from None


class SamplingNumber(click.types.FloatParamType):
    """A float checked against engine.request.SAMPLING_RANGES[key]: finite and in a sensible range."""

    def __init__(self, key: str) -> None:
        self.key = key

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        number = super().convert(value, param, ctx)
        problem = sampling_value_problem(self.key, number)
        if problem:
            self.fail(problem, param, ctx)
        return number


def option(*decls: str, **attrs: Any):
    """click.option whose value may also come from `INFINISTAR_<NAME>`."""
    flag = next(d for d in decls if d.startswith("--"))
    attrs.setdefault("envvar", envvar(flag))
    attrs.setdefault("cls", EnvOption)
    return click.option(*decls, **attrs)


def default_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("infinistar")) / "config.toml"


def locate_config(explicit: Optional[str]) -> Optional[Path]:
    """The file to read: `--config`, else `$INFINISTAR_CONFIG`, else the user file if it exists."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        return path
    path = default_config_path()
    return path if path.is_file() else None


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def option_key(param: click.Option) -> str:
    """Config key of an option: its long flag without dashes (`--tau-image` -> `tau_image`)."""
    flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    return flag.lstrip("-").replace("-", "_")


def configurable(command: click.Command) -> dict[str, click.Option]:
    """The options of `command` that a config file may set, by config key."""
    options = (p for p in command.params if isinstance(p, click.Option))
    return {option_key(p): p for p in options if option_key(p) not in NOT_CONFIGURABLE}


def _type_name(param: click.Option) -> str:
    if param.is_flag:
        return "true or false"
    if isinstance(param.type, click.types.IntParamType):
        return "an integer"
    if isinstance(param.type, click.types.FloatParamType):
        return "a number"
    return "a string"


def _check_scalar(param: click.Option, value: Any) -> bool:
    kind = _type_name(param)
    if kind == "true or false":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "an integer":
        return isinstance(value, int)
    if kind == "a number":
        return isinstance(value, (int, float))
    return isinstance(value, str)


def convert_value(param: click.Option, key: str, value: Any, where: str) -> Any:
    """Check a TOML value strictly against the option's type; return it in the option's form."""
    values = value if param.multiple and isinstance(value, list) else [value]
    for item in values:
        if not _check_scalar(param, item):
            plural = " or a list of them" if param.multiple else ""
            raise ConfigError(f"{where}: key '{key}' must be {_type_name(param)}{plural}, got {item!r}")
        try:
            param.type.convert(item, param, None)
        except click.BadParameter as error:
            raise ConfigError(f"{where}: key '{key}': {error.message}") from None
    return values if param.multiple else value


def build_default_map(raw: dict, group: click.Group, where: str) -> dict:
    """Validate a parsed config file against the CLI and return `{option: value, command: {...}}`."""
    commands = {name: configurable(cmd) for name, cmd in group.commands.items()}
    global_options = configurable(group)
    top: dict[str, Any] = {}
    tables: dict[str, dict] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if key in commands:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{key}' must be a table ([{key}])")
            tables[key] = value
            continue
        param = global_options.get(name) or next((o[name] for o in commands.values() if name in o), None)
        if param is None:
            raise ConfigError(f"{where}: unknown key '{key}'")
        top[name] = convert_value(param, key, value, where)
    # default_map is keyed by parameter name (`--json` is stored as `json_output`).
    default_map: dict[str, Any] = {global_options[k].name: v for k, v in top.items() if k in global_options}
    for command, options in commands.items():
        section = {options[k].name: v for k, v in top.items() if k in options}
        for key, value in tables.get(command, {}).items():
            name = key.replace("-", "_")
            if name not in options:
                raise ConfigError(f"{where}: unknown key '{key}' in [{command}]")
            section[options[name].name] = convert_value(options[name], f"{command}.{key}", value, where)
        default_map[command] = section
    return default_map


def load_default_map(explicit: Optional[str], group: click.Group) -> tuple[dict, Optional[Path]]:
    """Read and validate the config file (if any); return its default_map and path."""
    path = locate_config(explicit)
    if path is None:
        return {}, None
    return build_default_map(read_toml(path), group, f"config {path}"), path
