"""Click entry point. Commands stay thin: they validate, build a request and render events."""
from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Optional

import click
from click.core import ParameterSource

from engine import InfinistarError, __version__
from infinistar_cli import interrupts
from infinistar_cli.config import CONFIG_ENV, configurable, convert_value, load_default_map, option

DEVICES = ("auto", "cpu", "cuda", "mps")
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool the reader cut off


@dataclass(frozen=True)
class Settings:
    """Global options, shared with every command through `ctx.obj`."""

    device: str = "auto"
    quiet: bool = False
    verbose: bool = False


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {_one_line(message)}", err=True)
    sys.exit(code)


class InfinistarGroup(click.Group):
    """A group that turns every failure into one `Error: ...` line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except InfinistarError as error:
            raise click.ClickException(str(error)) from None
        except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM (infinistar_cli.interrupts)
            _fail(interrupts.describe(error), interrupts.exit_status(error))
        except BrokenPipeError:  # `infinistar ... | head`: the reader has gone; stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except OSError as error:  # disk full, permissions, ...: the environment, not a bug
            where = f": {error.filename}" if error.filename else ""
            raise click.ClickException(f"{error.strerror or error}{where}") from None
        except Exception as error:  # a bug: short message, traceback only when asked for
            if ctx.obj.verbose if isinstance(ctx.obj, Settings) else ctx.params.get("verbose"):
                traceback.print_exc()
                hint = ""
            else:
                hint = " (run with --verbose for the traceback)"
            _fail(f"unexpected {type(error).__name__}: {error}{hint}")

    def main(self, args: Optional[list[str]] = None, prog_name: Optional[str] = None, **extra: Any) -> Any:
        # Parsing the process's own argv (the console script, `python -m`): the process is ours
        # until it exits, so late signals are handled through interpreter shut-down too.
        owns_process = args is None
        with interrupts.handled(owns_process):
            try:
                return self._main(args, prog_name, **extra)
            except SystemExit as done:
                if owns_process:
                    interrupts.end_process(done.code)
                raise

    def _main(self, args: Optional[list[str]], prog_name: Optional[str], **extra: Any) -> Any:
        standalone = extra.pop("standalone_mode", True)
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            if not standalone:
                raise
            _fail(error.format_message() + hint, error.exit_code)
        except click.ClickException as error:
            if not standalone:
                raise
            _fail(error.format_message(), error.exit_code)
        except click.Abort as error:  # click's form of a KeyboardInterrupt while parsing
            if not standalone:
                raise
            cause = error.__cause__ or error.__context__ or error
            _fail(interrupts.describe(cause), interrupts.exit_status(cause))
        if standalone and interrupts.received():  # a signal some library callback swallowed
            _fail(interrupts.describe(interrupts.Interrupted(interrupts.received())),
                  128 + interrupts.received())
        if not standalone:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=InfinistarGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="infinistar")
@option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
        help="Where to run the model.")
@option("--quiet", "-q", is_flag=True, help="Print nothing but results and errors.")
@option("--verbose", "-v", is_flag=True, help="Print every progress event; tracebacks for bugs.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE", envvar=CONFIG_ENV,
              help="TOML config file (default: the user config dir's infinistar/config.toml).")
@click.pass_context
def cli(ctx: click.Context, device: str, quiet: bool, verbose: bool, config_file: Optional[str]) -> None:
    """Run InfinityStar text/image-to-video generation locally.

    Settings come from flags, then INFINISTAR_<OPTION> environment variables, then the config
    file, then built-in defaults.
    """
    try:
        default_map, _ = load_default_map(config_file, ctx.command)
    except InfinistarError as error:
        if ctx.get_parameter_source("config_file") != ParameterSource.ENVIRONMENT:
            raise
        raise click.ClickException(f"{CONFIG_ENV}: {error}") from None
    # The group's own options were parsed before the file was known: fill those left at default.
    values = {"device": device, "quiet": quiet, "verbose": verbose}
    options = configurable(ctx.command)
    for name in values:
        if name in default_map and ctx.get_parameter_source(name) == ParameterSource.DEFAULT:
            values[name] = convert_value(options[name], name, default_map[name], "config")
    ctx.default_map = {k: v for k, v in default_map.items() if isinstance(v, dict)}
    ctx.obj = Settings(**values)


def _register() -> None:
    from infinistar_cli.bench import bench
    from infinistar_cli.conditioned import extend, i2v
    from infinistar_cli.generate import t2i, t2v
    from infinistar_cli.info import info
    from infinistar_cli.models_cmd import download, models
    from infinistar_cli.serve_cmd import jobs, serve

    for command in (t2v, t2i, i2v, extend, info, download, models, bench, serve, jobs):
        cli.add_command(command)


_register()
