"""Atomic file and directory writes: a reader sees the old content or the new one, never half of either.

Every writer in the package goes through ``atomic_path``: it hands out a temporary path in the target's
own directory (so the final rename never crosses a filesystem), and on success fsyncs the new file, renames
it onto the target and fsyncs the directory so the rename survives a power cut; on any failure the
temporary file is removed and the target is left as it was. Directory trees (zarr stores) go through
``atomic_dir`` the same way. Written by hand because the standard library has no such helper and the
guarantees (fsync, cleanup on failure, same-directory temp) are the point.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temp_sibling(path: Path) -> Path:
    """A unique hidden path next to ``path`` that keeps its suffix (writers such as imageio pick the format by it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename) to disk where the platform allows opening directories."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path to write; on success fsync it and rename it onto ``path``, on failure delete it.

    ``mode`` (e.g. 0o644) sets the file's permissions before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp directory path to fill; on success move it to ``path`` (replacing it if ``overwrite``).

    On failure the temp tree is deleted and ``path`` is untouched. FileExistsError if ``path`` exists and
    ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp.is_file():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_json_atomic(path: str | Path, payload: Any, mode: int | None = None) -> Path:
    """Write ``payload`` as indented JSON (trailing newline) to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n", mode)
