"""`infinistar download` and `infinistar models`: fetch, list, verify and remove the weights.

The cache directory comes from --cache-dir, else INFINISTAR_CACHE, else the config file (the root
context's `obj`: a dict with "cache_dir" or an object with a `cache_dir` attribute), else the
Hugging Face cache.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from engine import InfinistarError, hub

VARIANT_CHOICES = click.Choice([*hub.VARIANTS, hub.ALL])


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn InfinistarError into a one-line `Error: …` and exit status 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InfinistarError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def _config_cache_dir(ctx: click.Context) -> Optional[str]:
    obj = ctx.find_root().obj
    if isinstance(obj, dict):
        return obj.get("cache_dir")
    return getattr(obj, "cache_dir", None)


def _cache(ctx: click.Context, cache_dir: Optional[str]) -> Path:
    return hub.resolve_cache_dir(cache_dir, _config_cache_dir(ctx))


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None,
    help="Where weights are stored (default: $INFINISTAR_CACHE, the config file, or the Hugging Face cache).",
)


@click.command()
@click.argument("variant", type=VARIANT_CHOICES, default="720p")
@click.option("--revision", default=hub.DEFAULT_REVISION, show_default=True, help="Branch, tag or commit of the hub repo.")
@cache_dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@friendly_errors
def download(ctx: click.Context, variant: str, revision: str, cache_dir: Optional[str], yes: bool) -> None:
    """Download model weights (VARIANT: 720p, 480p, interact or all) from Hugging Face.

    Interrupted downloads resume when the command is run again."""
    console = _console()
    plan = hub.plan_download(variant, revision, _cache(ctx, cache_dir))
    console.print(f"{hub.REPO_ID}@{revision} ({plan.commit[:10]}) → {plan.snapshot_dir}")
    if not plan.to_fetch:
        console.print(f"All {len(plan.files)} files of {variant} are already downloaded "
                      f"({hub.format_bytes(plan.bytes_total)}).")
        hub.download(plan)  # records the manifest and refs; fetches nothing
        return
    for f in plan.to_fetch:
        console.print(f"  {hub.format_bytes(f.size):>9}  {f.path}")
    already = f"; {len(plan.present)} files already present" if plan.present else ""
    console.print(f"To fetch: {len(plan.to_fetch)} files, {hub.format_bytes(plan.bytes_to_fetch)}{already}.")
    hub.check_disk_space(plan)
    if not yes:
        click.confirm("Continue?", default=True, abort=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"download {variant}", total=plan.bytes_total)
        path = hub.download(plan, on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    console.print(f"Done: {variant} is in {path}")


@click.group(invoke_without_command=True)
@cache_dir_option
@click.option("--verify", is_flag=True, help="Check sizes and hashes of downloaded files.")
@click.option("--offline", is_flag=True, help="With --verify: no network; check sizes and file headers only.")
@click.pass_context
@friendly_errors
def models(ctx: click.Context, cache_dir: Optional[str], verify: bool, offline: bool) -> None:
    """List model variants with their download state, size on disk and location."""
    ctx.meta["infinistar_cache_dir"] = cache_dir  # meta is shared with the `rm` subcommand
    if ctx.invoked_subcommand is not None:
        return
    cache = _cache(ctx, cache_dir)
    console = _console()
    console.print(f"cache: {cache}")
    # Plain columns, not a rich table: paths must print whole so they can be copied.
    console.print(f"{'variant':<9} {'state':<9} {'on disk':>9}  {'offline':<7}  path", style="bold")
    for name, folder in hub.BUILT_IN.items():
        size = hub.format_bytes(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
        console.print(f"{name:<9} {'built-in':<9} {size:>9}  {'yes':<7}  {folder}")
    for name in hub.VARIANTS:
        status = hub.model_status(name, cache)
        if status.state == "absent":
            console.print(f"{name:<9} {'absent':<9} {'-':>9}  {'no':<7}  -")
            continue
        size = hub.format_bytes(status.bytes_on_disk)
        offline = "yes" if status.state == "complete" else "no"
        console.print(f"{name:<9} {status.state:<9} {size:>9}  {offline:<7}  {status.path}")
    console.print("offline yes: runs without a network connection; `infinistar download VARIANT` fetches the others.")
    failed = False
    if verify:
        for name in hub.VARIANTS:
            if hub.model_status(name, cache).state == "absent":
                continue
            report = hub.verify(name, cache, online=not offline)
            how = "sizes and hashes" if report.hashed else "sizes and headers"
            if report.ok:
                console.print(f"{name}: OK ({report.files_checked} files, {how})")
            else:
                failed = True
                console.print(f"{name}: {len(report.problems)} problem(s):")
                for problem in report.problems:
                    console.print(f"  {problem}")
    if failed:
        raise InfinistarError("verification failed; run `infinistar download <variant>` to repair.")


def _removable(variant: str, cache: Path) -> bool:
    """Whether `models rm variant` would delete anything: its own files, or shared files (VAE,
    text encoder) of an unfinished download that no other present variant uses."""
    names = hub.variant_names(variant)
    statuses = {name: hub.model_status(name, cache) for name in hub.VARIANTS}
    if any(statuses[name].state != "absent" for name in names):
        return True
    others_present = any(status.state != "absent" for name, status in statuses.items() if name not in names)
    return any(statuses[name].path is not None for name in names) and not others_present


@models.command("rm")
@click.argument("variant", type=VARIANT_CHOICES)
@cache_dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@friendly_errors
def rm(ctx: click.Context, variant: str, cache_dir: Optional[str], yes: bool) -> None:
    """Delete a variant's weights (files shared with another downloaded variant are kept)."""
    cache = _cache(ctx, cache_dir or ctx.meta.get("infinistar_cache_dir"))
    if not _removable(variant, cache):  # said before asking, not after
        raise InfinistarError(f"InfinityStar {variant} is not in {cache}; nothing to remove.")
    if not yes:
        click.confirm(f"Delete {variant} from {cache}?", default=False, abort=True)
    freed = hub.remove(variant, cache)
    _console().print(f"Removed {variant}; freed {hub.format_bytes(freed)}.")
