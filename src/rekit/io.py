"""Atomic file writes: a crash leaves either the old file or the new one, never half of one.

Written files get the mode an ordinary `open()` would give them (0666 less the umask): the
temporary file `tempfile` makes is private (0600) until it is renamed over the target.
A write that fails for want of space or permission is one line (`OutputError`) that names the
file; the previous file stays and no temporary file is left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rekit.errors import RekitError

# errno values a user fixes by freeing space or choosing another place: one line, no traceback.
USER_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "the file system is read-only"}


class OutputError(RekitError):
    """An output file that cannot be written (full disk, no permission, read-only file system)."""

    def __init__(self, code: int | None, message: str):
        super().__init__(message)
        self.errno = code


def umask() -> int:
    """The process's umask, read without changing it where Linux allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def output_error(path: str | Path, e: OSError) -> Exception:
    """A user-fixable OSError as an OutputError naming `path`; any other one unchanged."""
    why = USER_ERRNOS.get(e.errno or 0)
    return OutputError(e.errno, f"cannot write {path}: {why}") if why else e


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~umask())
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno in USER_ERRNOS:
            raise output_error(path, e) from None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_output(path: str | Path, flag: str = "--output", need_bytes: int = 0) -> Path:
    """Before the long work: `path` can be written (its folder exists and takes a new file) and
    the disk has room for about `need_bytes`. Probes by creating and removing a temporary file."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(errno.EISDIR, f"{flag} {path} is a directory; name a file in it")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(errno.ENOENT, f"{flag} {path}: folder {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(tmp)
        fs = os.statvfs(parent)
        free = fs.f_bavail * fs.f_frsize
    except OSError as e:
        raise OutputError(e.errno, f"{flag} {path}: cannot write in {parent}: "
                          f"{USER_ERRNOS.get(e.errno or 0) or e.strerror}") from None
    if free < need_bytes:
        raise OutputError(errno.ENOSPC, f"{flag} {path}: {free:,} bytes free in {parent}, about "
                          f"{need_bytes:,} needed; free some space or write elsewhere")
    return path
