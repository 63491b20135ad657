"""A time-out on every request huggingface_hub makes, so that a hub which accepts the connection
and then never answers fails with a clear message instead of hanging forever.

huggingface_hub bounds file transfers itself (HF_HUB_DOWNLOAD_TIMEOUT, HF_HUB_ETAG_TIMEOUT) but
sends its API calls (`model_info`, the tree listing inside `snapshot_download`) with no time-out
at all. `install()` gives every request that has none the same limit as a file transfer: seconds
without a byte from the hub, HF_HUB_DOWNLOAD_TIMEOUT (default 10), read when the request is sent.

huggingface_hub also retries a silent hub patiently (per file, a 60 s second try and five more
with back-off), which for a whole model adds up to many minutes. A download watches its own
progress and, when nothing has arrived for STALL_TIMEOUTS time-outs, `trip()`s a breaker that
fails every further request at once, so the download ends within one more time-out.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

DEFAULT_TIMEOUT_S = 10.0
STALL_TIMEOUTS = 3
_tripped = False


class HubStalled(Exception):
    """Raised for every request once a download has seen no progress for too long."""


def trip() -> None:
    global _tripped
    _tripped = True


def reset() -> None:
    global _tripped
    _tripped = False


def tripped() -> bool:
    return _tripped


def _check_breaker() -> None:
    if _tripped:
        raise HubStalled(f"the hub sent nothing for {STALL_TIMEOUTS * timeout_s():g} s")


def timeout_s() -> float:
    """Seconds a hub request may wait for the hub: HF_HUB_DOWNLOAD_TIMEOUT, else 10."""
    try:
        value = float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT", ""))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def _fill_httpx_timeout(request: Any) -> None:
    """httpx request hook: no request waits longer than ours (None, or the library's 60 s retry)."""
    _check_breaker()
    seconds = timeout_s()
    timeout = dict(request.extensions.get("timeout") or {})
    for key in ("connect", "read", "write", "pool"):
        if timeout.get(key) is None or timeout[key] > seconds:
            timeout[key] = seconds
    request.extensions["timeout"] = timeout


def install() -> None:
    """Make sure huggingface_hub's shared HTTP client bounds every request (idempotent; called
    before each hub operation, since the library may rebuild its client)."""
    import huggingface_hub

    if hasattr(huggingface_hub, "set_client_factory"):  # huggingface_hub >= 1.0: one httpx client
        hooks = huggingface_hub.get_session().event_hooks
        if _fill_httpx_timeout not in hooks.get("request", []):
            hooks.setdefault("request", []).append(_fill_httpx_timeout)
            huggingface_hub.get_session().event_hooks = hooks
        return
    if hasattr(huggingface_hub, "configure_http_backend") and not getattr(install, "_requests_done", False):
        import requests  # huggingface_hub < 1.0

        class TimedSession(requests.Session):
            def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                _check_breaker()
                wanted = kwargs.get("timeout")
                if wanted is None or not isinstance(wanted, (int, float)) or wanted > timeout_s():
                    kwargs["timeout"] = timeout_s()
                return super().request(method, url, *args, **kwargs)

        huggingface_hub.configure_http_backend(backend_factory=TimedSession)
        install._requests_done = True  # type: ignore[attr-defined]


@contextmanager
def guarded(progress: Callable[[], int], report: Callable[[int], None], poll_s: float) -> Iterator[None]:
    """Run a transfer with time-outs installed, huggingface_hub's retry warnings silenced, and a
    watcher thread that reports `progress()` every `poll_s` and trips the breaker when it has not
    moved for STALL_TIMEOUTS time-outs. A HubStalled raised inside says how long it waited."""
    install()
    reset()
    stop = threading.Event()

    def watch() -> None:
        last, since = -1, time.monotonic()
        while not stop.wait(poll_s):
            done = progress()
            report(done)
            if done != last:
                last, since = done, time.monotonic()
            elif time.monotonic() - since > STALL_TIMEOUTS * timeout_s():
                trip()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with quiet_retries():
            yield
    except Exception as error:
        if tripped() and not isinstance(error, HubStalled):
            raise HubStalled(f"the hub sent nothing for {STALL_TIMEOUTS * timeout_s():g} s") from error
        raise
    finally:
        stop.set()
        watcher.join()
        reset()


@contextmanager
def quiet_retries() -> Iterator[None]:
    """huggingface_hub logs every retry as a warning ("Retrying in 1s [Retry 1/5]"); the
    download's own progress and its one-line error say what matters."""
    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
