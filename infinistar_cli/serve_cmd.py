"""`infinistar serve` (the model stays loaded behind an HTTP API and a page) and `infinistar jobs`."""
from __future__ import annotations

import ipaddress
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import click

from engine import OFFLOAD_MODES, WEIGHT_MODES
from infinistar_cli.config import option

DEFAULT_PORT = 8765
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}


def parse_keep_alive(text: str) -> Optional[float]:
    """Seconds to keep an idle model loaded: "5m", "30s", "1h", "90" (seconds), "0"; "-1" = forever (None)."""
    text = text.strip().lower()
    if text == "-1":
        return None
    match = DURATION.match(text)
    if not match:
        raise click.BadParameter(f"expected a duration like 5m, 30s, 1h, 0 or -1, got {text!r}", param_hint="--keep-alive")
    return float(match[1]) * UNITS[match[2]]


def read_token(path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(f"cannot read {path}: {getattr(error, 'strerror', None) or error}",
                                 param_hint="--token-file") from None
    if not token or len(token.split()) != 1:
        raise click.BadParameter(f"{path} must hold one token on one line", param_hint="--token-file")
    return token


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


@click.command("serve")
@option("--host", default="127.0.0.1", show_default=True,
        help="Address to listen on; anything but loopback needs --token-file.")
@option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="Port to listen on.")
@option("--model", "-m", metavar="NAME|DIR",
        help="Default model of requests [default: the CLI's: 720p, 480p for 10 s videos and extend].")
@option("--keep-alive", default="5m", show_default=True, metavar="DURATION",
        help="Keep an idle model loaded this long: 30s, 5m, 1h; 0 = release after every job, -1 = never.")
@option("--max-queue", type=click.IntRange(min=1), default=16, show_default=True,
        help="Jobs that may wait; more are refused with HTTP 429.")
@option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
        help="File holding the bearer token every API request must send.")
@option("--preload", is_flag=True, help="Load the default model at start, not on the first job.")
@option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
        help="Jobs database, outputs and uploads [default: the user data dir's infinistar/server].")
@option("--max-upload-mb", type=click.IntRange(min=1), default=64, show_default=True,
        help="Largest input_reference upload.")
@option("--cache-dir", type=click.Path(file_okay=False), envvar="INFINISTAR_CACHE", metavar="DIR",
        help="Where downloaded weights are.")
@option("--offload", type=click.Choice(OFFLOAD_MODES), default="none", show_default=True,
        help="Keep weights off the GPU until needed (as for t2v).")
@option("--weights", type=click.Choice(WEIGHT_MODES), default="bf16", show_default=True,
        help="Storage of the transformer blocks' weights (as for t2v).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, model: Optional[str], keep_alive: str, max_queue: int,
          token_file: Optional[str], preload: bool, data_dir: Optional[str], max_upload_mb: int,
          cache_dir: Optional[str], offload: str, weights: str) -> None:
    """Serve generation over HTTP with the model kept loaded: an OpenAI-style /v1/videos job API,
    /v1/images/generations, API docs at /docs and a web page at /.

    \b
    Examples:
      infinistar serve                       # http://127.0.0.1:8765
      infinistar serve --model tiny --keep-alive 30m
      infinistar serve --host 0.0.0.0 --token-file ~/.infinistar-token
    """
    seconds = parse_keep_alive(keep_alive)
    token = read_token(token_file)
    if not is_loopback(host) and token is None:
        raise click.UsageError(f"listening on {host} needs --token-file: a bearer token every request must send")
    if model and not ("/" in model or Path(model).exists()):
        from engine import presets

        presets.get(model)  # an unknown name fails here, before the server starts
    try:
        import uvicorn

        from infinistar_server.app import DataDirBusy, ServerSettings, create_app, lock_data_dir
        from infinistar_server.worker import Device
    except ImportError as error:
        raise click.ClickException(f"infinistar serve needs the serve extra ({error.name} is missing): "
                                   "pip install 'infinistar[serve]'") from None
    from platformdirs import user_data_dir

    directory = Path(data_dir or Path(user_data_dir("infinistar")) / "server").expanduser()
    _check_port(host, port)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        lock_data_dir(directory).close()  # the app holds the lock while it runs; this only asks early
    except DataDirBusy as error:
        raise click.ClickException(str(error)) from None
    settings = ServerSettings(
        data_dir=directory, model=model, keep_alive=seconds, max_queue=max_queue, token=token,
        max_upload=max_upload_mb << 20, preload=preload,
        device=Device(device=ctx.obj.device, cache_dir=cache_dir, offload=offload, weights=weights))
    app = create_app(settings)
    where = f"[{host}]" if ":" in host else host
    if not ctx.obj.quiet:
        click.echo(f"infinistar serving on http://{where}:{port} (page /, API docs /docs); jobs in {directory}",
                   err=True)
    uvicorn.run(app, host=host, port=port, log_level="info" if ctx.obj.verbose else "warning")


def _call(url: str, token: Optional[str], method: str = "GET") -> dict:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = error.reason
        raise click.ClickException(f"the server answered {error.code}: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise click.ClickException(f"no server at {url.split('/v1')[0]} ({reason}); start one with 'infinistar serve'") from None


@click.command("jobs")
@option("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True, help="The server.")
@option("--token-file", type=click.Path(dir_okay=False), metavar="FILE", help="Bearer token of the server.")
@click.option("--cancel", "cancel", multiple=True, metavar="ID", help="Cancel a queued or running job; repeatable.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="Jobs to list, newest first.")
@option("--json", "json_output", is_flag=True, help="Print one JSON object per job.")
def jobs(url: str, token_file: Optional[str], cancel: tuple[str, ...], limit: int, json_output: bool) -> None:
    """List the jobs of a running `infinistar serve`, or cancel some.

    \b
    Examples:
      infinistar jobs
      infinistar jobs --cancel video_0123456789abcdef0123456789abcdef
    """
    token, base = read_token(token_file), url.rstrip("/")
    if cancel:
        listed = [_call(f"{base}/v1/videos/{urllib.request.quote(job_id, safe='')}", token, "DELETE")
                  for job_id in cancel]
    else:
        listed = _call(f"{base}/v1/videos?limit={limit}", token)["data"]
    for job in listed:
        if json_output:
            click.echo(json.dumps(job, ensure_ascii=False))
            continue
        state = job.get("status", "deleted" if job.get("deleted") else "?")
        if state == "in_progress":
            state = f"{job['progress']}% {job.get('stage') or ''}".strip()
        elif job.get("error"):
            state += f": {job['error']['message']}"
        prompt = job.get("prompt") or ""
        click.echo(f"{job['id']}  {job.get('mode', ''):6} seed {job.get('seed', '')!s:>10}  {state}  {prompt[:50]}")
