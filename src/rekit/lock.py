"""One writer per output directory: an OS-level lock (flock) on a file beside the directory.

`rekit train` (new run, --overwrite, --resume) and `rekit pretrain` hold `PARENT/.NAME.lock`
while they write `PARENT/NAME`. The lock file sits beside the directory, not inside it, because
--overwrite removes and recreates the directory: a lock inside would vanish with it and a second
command could lock the new, empty directory while the first still writes. The kernel releases a
flock when its process dies (kill -9 included), so a lock left by a killed process is simply
taken over; the PID written in the file is only there to name the holder in the error.

Only one process of a torchrun job takes it (the main one); the others work under it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from rekit.errors import RekitError


class LockedError(RekitError):
    """Another process is writing the same run or output directory."""


def lock_path(directory: str | Path) -> Path:
    d = Path(directory)
    return d.parent / f".{d.name}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


def acquire(directory: str | Path, what: str = "run directory") -> int:
    """Lock `directory` for this process; returns the lock file's descriptor (see `release`)."""
    path = lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise LockedError(f"cannot lock {directory}: cannot create {path} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockedError(f"cannot lock {directory} ({path}): {e.strerror}") from None
            raise LockedError(f"{what} {directory} is in use by {_holder(path)} (lock {path}); wait for it to "
                              "finish or stop it first") from None
        # The holder we waited on may have removed the file after we opened it: then our lock is
        # on a file nobody else will find. Lock the file that is there now instead.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    return fd


def release(directory: str | Path, fd: int) -> None:
    """Remove the lock file, then unlock (in that order, so nobody locks a file being removed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path(directory))
    os.close(fd)


def check_free(directory: str | Path, what: str = "run directory") -> None:
    """LockedError now if another process holds `directory` (e.g. before reading its files)."""
    if lock_path(directory).exists():
        release(directory, acquire(directory, what))


@contextlib.contextmanager
def locked(directory: str | Path, what: str = "run directory") -> Iterator[Path]:
    """Hold the lock of `directory` for the block; LockedError at once if another process has it."""
    fd = acquire(directory, what)
    try:
        yield Path(directory)
    finally:
        release(directory, fd)
