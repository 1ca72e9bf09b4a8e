"""Atomic file and directory writes: a reader sees the old content or the new one, never half of either.

Every writer in the package goes through ``atomic_path``: it hands out a temporary path in the target's
own directory (so the final rename never crosses a filesystem), and on success fsyncs the new file, renames
it onto the target and fsyncs the directory so the rename survives a power cut; on any failure the
temporary file is removed and the target is left as it was. Directory trees (zarr stores) go through
``atomic_dir`` the same way. Written by hand because the standard library has no such helper and the
guarantees (fsync, cleanup on failure, same-directory temp) are the point.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TEMP_NAME = re.compile(r"^\..*\.tmp-\d+-[0-9a-f]{8}")  # what _temp_sibling makes


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
    ``overwrite`` is false, also when another process creates ``path`` meanwhile: the final rename never
    replaces a tree it did not check. With ``overwrite`` the old tree is renamed aside, the new one renamed
    in, and only then is the old one deleted.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if overwrite and path.exists():
            aside = _temp_sibling(path)
            os.rename(path, aside)
            os.rename(tmp, path)
            shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
        else:
            _rename_no_replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp.is_file():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists (a non-empty directory is never replaced)."""
    if dst.exists():
        raise FileExistsError(f"{dst} already exists (created by another process meanwhile)")
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(f"{dst} already exists (created by another process meanwhile)") from None
        raise


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temp files ``atomic_path`` leaves in ``directory`` when a writer is killed; returns them.

    Call it only while holding the directory's lock: a temp file of a live writer looks the same.
    """
    removed = []
    for entry in Path(directory).glob(".*.tmp-*"):
        if _TEMP_NAME.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


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


def check_output(src: Path, path: Path, overwrite: bool, replaceable: Callable[[Path], bool], kind: str) -> None:
    """Refuse to write onto the input, to clobber an existing output unless asked, or to replace a non-``kind``."""
    if path.exists() and src.exists() and path.resolve() == src.resolve():
        raise ValueError(f"{path} is the input; choose another output path")
    if not path.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not replaceable(path):
        raise ValueError(
            f"{path} exists and is not {kind}; refusing to replace it: remove it yourself or choose another path"
        )
