"""Advisory locks between processes: ``fcntl.flock`` on a lock file, released on close, exit or crash.

An exclusive holder writes its PID into the lock file, so a process that finds the lock taken can name
the holder. The kernel drops a flock when the holder's file descriptor closes, including when the
process is killed, so a stale lock file never blocks anyone (its PID is only read while the lock is held).
A lock taken on a file that was replaced or deleted meanwhile (the directory holding it was swapped) is
retried on the file now at the path, so two processes never both believe they hold the lock.

Limits: flock is advisory (only processes that take it are kept out) and local to one kernel on some
network filesystems (NFS emulates it with POSIX locks, SMB/sshfs may not share it between machines).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

POLL_S = 0.05  # seconds between attempts while waiting for a lock


class LockBusyError(BlockingIOError):
    """Another process holds the lock (``pid`` is its PID when the lock file names it)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "another process"
        super().__init__(f"{path} is held by {holder}")
        self.path = path
        self.pid = pid


def holder_pid(path: str | Path) -> int | None:
    """The PID an exclusive holder wrote into the lock file at ``path`` (None if unreadable)."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


class FileLock:
    """An exclusive (or shared) flock on ``path``; ``acquire`` waits up to a timeout, ``release`` drops it."""

    def __init__(self, path: str | Path, *, shared: bool = False) -> None:
        self.path = Path(path)
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, timeout: float | None = 0.0, on_wait: Callable[[int | None], None] | None = None) -> "FileLock":
        """Take the lock, waiting up to ``timeout`` seconds (None: as long as it takes); LockBusyError after.

        An exclusive lock creates the lock file if needed and records this process's PID in it; a shared
        lock opens an existing file read-only (FileNotFoundError if there is none). ``on_wait(holder_pid)``
        is called once if the lock is busy and the call is going to wait.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this FileLock")
        deadline = None if timeout is None else time.monotonic() + timeout
        flags = os.O_RDONLY if self.shared else os.O_RDWR | os.O_CREAT
        operation = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        waited = False
        while True:
            fd = os.open(self.path, flags | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, operation)
            except BlockingIOError:
                os.close(fd)
                pid = holder_pid(self.path)
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockBusyError(self.path, pid) from None
                if not waited and on_wait is not None:
                    on_wait(pid)
                waited = True
                time.sleep(POLL_S)
                continue
            if self._is_current(fd):
                break
            os.close(fd)  # the file was replaced while we waited: lock the one at the path now
        if not self.shared:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``self.path`` (not one replaced or deleted meanwhile)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def moved_to(self, path: str | Path) -> None:
        """Follow a rename of the lock file (its directory was renamed); the lock stays held."""
        self.path = Path(path)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it); a no-op if not held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def is_locked(path: str | Path) -> bool:
    """Whether some process holds an exclusive lock on the lock file at ``path`` (False if there is none)."""
    probe = FileLock(path, shared=True)
    try:
        probe.acquire(timeout=0)
    except FileNotFoundError:
        return False
    except LockBusyError:
        return True
    probe.release()
    return False
