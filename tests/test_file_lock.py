"""Tests for data/file_lock.py: one holder at a time, its PID named, waiting with a timeout, released on a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.file_lock import FileLock, LockBusyError, holder_pid, is_locked

ROOT = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys, time\nfrom data.file_lock import FileLock\n"
    "lock = FileLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"
)


def _holder(path) -> subprocess.Popen:
    """A child process that takes the lock at ``path`` and keeps it until killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout.readline().strip() == "held"
    return child


def test_second_holder_fails_naming_the_pid_and_gets_the_lock_after_a_crash(tmp_path):
    path = tmp_path / ".lock"
    child = _holder(path)
    try:
        assert is_locked(path) and holder_pid(path) == child.pid
        with pytest.raises(LockBusyError, match=f"held by PID {child.pid}") as caught:
            FileLock(path).acquire(timeout=0)
        assert caught.value.pid == child.pid
        start = time.monotonic()
        with pytest.raises(LockBusyError):
            FileLock(path).acquire(timeout=0.3, on_wait=lambda pid: print("waiting for", pid))
        assert 0.3 <= time.monotonic() - start < 5
    finally:
        child.kill()  # no cleanup code runs: the kernel drops the lock
        child.wait(timeout=10)
    lock = FileLock(path).acquire(timeout=5)
    assert holder_pid(path) == os.getpid() and not FileLock(path, shared=True).held
    lock.release()
    assert not is_locked(path)


def test_waiter_gets_the_lock_when_the_holder_lets_go(tmp_path):
    path = tmp_path / ".lock"
    child = _holder(path)
    seen = []
    try:
        subprocess.Popen(["sh", "-c", f"sleep 0.5; kill {child.pid}"])
        with FileLock(path).acquire(timeout=10, on_wait=seen.append):
            assert holder_pid(path) == os.getpid()
    finally:
        child.kill()
        child.wait(timeout=10)
    assert seen == [child.pid]  # told once whom it waited for


def test_shared_locks_coexist_and_keep_writers_out(tmp_path):
    with pytest.raises(FileNotFoundError):
        FileLock(tmp_path / "none", shared=True).acquire()
    assert not is_locked(tmp_path / "none")
    path = tmp_path / ".lock"
    FileLock(path).acquire().release()  # creates the file
    readers = [FileLock(path, shared=True).acquire(), FileLock(path, shared=True).acquire()]
    assert not is_locked(path)  # readers are not writers
    with pytest.raises(LockBusyError):
        FileLock(path).acquire(timeout=0)
    for reader in readers:
        reader.release()
    with FileLock(path) as writer:
        assert writer.held
        with pytest.raises(LockBusyError):
            FileLock(path, shared=True).acquire(timeout=0)
