"""Files that appear whole or not at all, and sets of files (a video and its sidecar) that appear
together or not at all.

Each file is written under a hidden temp name in its target directory (`Staged`), fsynced, and
renamed into place by `publish`, which renames a whole set in one step:
- under an exclusive lock on the directory, so two processes publishing the same names cannot
  interleave (the last publisher's whole set wins: never one run's video with another's sidecar);
- with SIGINT/SIGTERM held back until every name is in place (`signals_deferred`), so Ctrl-C
  cannot split a set;
- companions (the sidecar) first and the main file last, because the main file is what marks an
  output as done (a batch rerun skips existing outputs): a crash in between can leave a sidecar
  that the rerun replaces, never a video without its sidecar.
Failures while writing (disk full, Ctrl-C) happen before any rename, and the temps are removed.
Temps this process still holds are also removed at exit (`discard_all`), whatever interrupted it.
"""
from __future__ import annotations

import atexit
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from engine.errors import OutputExistsError, OutputPathError

DEFERRED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))
_live: set[Path] = set()  # temp files of this process not yet published or discarded


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM arriving inside the block are delivered (to whatever handler was set) when
    it ends. Only the main thread can set handlers; elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for signum in DEFERRED_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is None or handler == signal.SIG_IGN:  # installed outside Python, or ignored
            continue
        previous[signum] = signal.signal(signum, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def file_mode() -> int:
    """Permissions a plain open() would give (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open directories; the data itself is synced
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


class Staged:
    """A hidden temp file next to `path` (`.name.<random>.part`), published by `publish`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with signals_deferred():  # created and recorded as one step: no unrecorded temp
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
            except OSError as error:
                raise OutputPathError(f"cannot write in {self.path.parent}: {error.strerror or error}") from None
            self.tmp = Path(tmp)
            _live.add(self.tmp)
        os.close(fd)
        os.chmod(self.tmp, file_mode())

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)
        _live.discard(self.tmp)


def discard_all() -> None:
    """Remove every temp file this process has not published (at exit, after an interruption)."""
    for tmp in list(_live):
        tmp.unlink(missing_ok=True)
        _live.discard(tmp)


atexit.register(discard_all)


@contextmanager
def directory_locked(directory: Path) -> Iterator[None]:
    """An exclusive flock on the directory itself (no lock file to leave behind); where the
    platform or filesystem has none, publishing is still atomic per file."""
    try:
        import fcntl
        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def publish(files: Sequence[Staged], overwrite: bool) -> None:
    """Rename staged files into place together: `files[0]` is the main file (refused if it exists
    and not `overwrite`), the others its companions (always replaced). On any failure nothing new
    stays published and every temp is removed."""
    main, companions = files[0], list(files[1:])
    try:
        for staged in files:
            fsync_path(staged.tmp)
        with signals_deferred(), directory_locked(main.path.parent):
            if not overwrite and os.path.lexists(main.path):
                raise OutputExistsError(f"{main.path} already exists; not overwriting it")
            placed: list[Path] = []
            try:
                for staged in companions:
                    os.replace(staged.tmp, staged.path)
                    placed.append(staged.path)
                _place_main(main, overwrite)
            except BaseException:
                for path in placed:
                    path.unlink(missing_ok=True)
                raise
            for staged in files:
                _live.discard(staged.tmp)
    finally:
        for staged in files:
            staged.discard()
    fsync_path(main.path.parent, directory=True)


def _place_main(main: Staged, overwrite: bool) -> None:
    if overwrite:
        os.replace(main.tmp, main.path)
        return
    # link() refuses to replace: no clobbering even by a process that does not take the lock.
    try:
        os.link(main.tmp, main.path)
    except FileExistsError:
        raise OutputExistsError(f"{main.path} already exists; not overwriting it") from None
    except OSError:  # a filesystem without hard links
        if os.path.lexists(main.path):
            raise OutputExistsError(f"{main.path} already exists; not overwriting it") from None
        os.replace(main.tmp, main.path)
    else:
        os.unlink(main.tmp)
