"""Zarr-backed episode store (``ReplayBuffer``).

Layout (see ARCHITECTURE.md)::

    <name>.zarr/
      data/<key>         (N, ...)  time is axis 0, chunked along time
      meta/episode_ends  (E,) int64, exclusive end of each episode, strictly increasing, last == N
      meta/<name>        (E,)      optional per-episode values (e.g. the expert's mode, the seed)
      attrs              {"format": "actchunk.replay/1", ...}

Writes zarr format 3 (Blosc/zstd by default, then a crc32c checksum per chunk, see ``data.integrity``);
reads format 3, format 2 directories and ``.zarr.zip`` files, so Diffusion Policy's stores open unchanged.

One writer at a time: every writer (``create``, ``open(mode="a")``) holds an exclusive ``fcntl.flock``
on ``meta/episode_ends/.lock`` (the file holds its PID; inside an array directory, so zarr never lists
it as a hierarchy member) until ``close()`` or the process ends; another writer waits up to
``lock_timeout`` seconds and then fails naming that PID. ``create`` builds the empty store in a temp
directory beside the target and renames it into place only if nothing is there, so two creators never
delete each other's store.

Appending is atomic for readers: the data arrays and per-episode meta grow first and
``meta/episode_ends`` is written last. Readers take no lock and trust ``episode_ends``: they read it
before the array shapes, so every committed episode is fully there, and arrays longer than
``episode_ends[-1]`` (or an ``episode_ends`` whose last entry is not written yet) are the uncommitted
tail of an append. Such a tail is accepted while a writer holds the lock or the group attribute
``appending`` says an append was interrupted (the next writer drops it); otherwise the store is refused
as inconsistent. An exception inside ``add_episode`` rolls the arrays back before it propagates.
Damaged chunks and metadata are reported in one line naming the store, the key and the chunk.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numcodecs
import numcodecs.errors
import numpy as np
import zarr
import zarr.codecs
import zarr.storage

from data import integrity
from data.atomic import atomic_dir
from data.file_lock import FileLock, LockBusyError, is_locked

FORMAT = "actchunk.replay/1"
COMPRESSORS = ("zstd", "lz4", "lz4hc", "blosclz", "zlib", "none")
LOCK_FILE = Path("meta", "episode_ends", ".lock")  # the writer lock, relative to the store
_APPENDING = "appending"
_DAMAGED = "the store is damaged: restore it from a copy or re-collect it (python -m data.verify {where} lists all)"


class StoreReport(NamedTuple):
    """What ``ReplayBuffer.verify`` found: one line per problem, chunks checked, arrays without checksums."""

    problems: list[str]
    chunks: int
    unchecked: list[str]


class ReplayBufferError(ValueError):
    """A store that cannot be opened or an episode that cannot be added."""


class StoreExistsError(ReplayBufferError):
    """``create`` found something at the path (possibly made by another process a moment ago)."""


class StoreLockedError(ReplayBufferError):
    """Another process holds the store's writer lock."""


@functools.cache
def _register_optional_codecs() -> None:
    """Register imagecodecs' numcodecs (JPEG 2000 etc., used by Diffusion Policy's image stores) once."""
    try:
        from imagecodecs.numcodecs import register_codecs
    except ImportError:
        return
    register_codecs(verbose=False)


def _blosc(cname: str, clevel: int, itemsize: int, zarr_format: int) -> Any:
    """Blosc compressor (bit-shuffle for multi-byte items) in the store's zarr format; v3 chains end with crc32c."""
    if zarr_format == 2:  # appending to a Diffusion Policy (format 2) store needs numcodecs' codec
        if cname == "none":
            return None
        return numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=numcodecs.Blosc.BITSHUFFLE if itemsize > 1 else 0)
    if cname == "none":
        return integrity.with_checksum(None)
    shuffle = "bitshuffle" if itemsize > 1 else "noshuffle"
    return integrity.with_checksum([zarr.codecs.BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle)])


def _safe_cast(what: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast ``value`` to ``dtype`` if no information is lost (floats may narrow to float32), else raise.

    ``what`` names the value in the error ("key 'action'", "meta 'seed'").
    """
    strings = (value.dtype.kind in "UTO", dtype.kind in "UTO")
    if any(strings):
        if all(strings):
            return value
        raise ReplayBufferError(
            f"add_episode: {what} dtype {value.dtype} cannot be cast safely to the store's dtype {dtype}; "
            f"convert it before add_episode"
        )
    if value.dtype == dtype:
        return value
    if value.dtype.kind == "b" or np.can_cast(value.dtype, dtype, casting="safe"):
        return value.astype(dtype)
    if dtype.kind == "f" and value.dtype.kind in "iuf":
        return value.astype(dtype)
    if dtype.kind in "iu" and value.dtype.kind in "iu":
        info = np.iinfo(dtype)
        if value.size == 0 or (value.min() >= info.min and value.max() <= info.max):
            return value.astype(dtype)
        raise ReplayBufferError(
            f"add_episode: {what} values {value.min()}..{value.max()} do not fit the store's dtype {dtype}"
        )
    raise ReplayBufferError(
        f"add_episode: {what} dtype {value.dtype} cannot be cast safely to the store's dtype {dtype}; "
        f"convert it before add_episode"
    )


def _rows(selection: Any, length: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` an axis-0 selection touches (all rows when it cannot tell)."""
    first = selection[0] if isinstance(selection, tuple) and selection else selection
    if isinstance(first, slice):
        start, stop, _ = first.indices(length)
        return start, max(start, stop)
    if isinstance(first, (int, np.integer)):
        row = int(first) % length if length else 0
        return row, row + 1
    try:
        index = np.asarray(first)
    except (TypeError, ValueError):
        return 0, length
    if index.dtype.kind == "b":
        index = np.flatnonzero(index)
    if index.dtype.kind not in "iu" or index.size == 0:
        return 0, length
    index = np.where(index < 0, index + length, index)
    return int(index.min()), int(index.max()) + 1


class StoreArray:
    """A zarr array of a store, read like one; a damaged chunk raises one line naming store, key and chunk."""

    def __init__(self, arr: zarr.Array, name: str, where: str) -> None:
        self._arr = arr
        self.name = name
        self._where = where

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape (time first)."""
        return tuple(self._arr.shape)

    @property
    def dtype(self) -> np.dtype:
        """The array's numpy dtype."""
        return self._arr.dtype

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self._arr.ndim

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape."""
        return tuple(self._arr.chunks)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, selection: Any) -> np.ndarray:
        return self._read(selection, lambda: self._arr[selection])

    def get_orthogonal_selection(self, selection: Any) -> np.ndarray:
        """Read an orthogonal (outer) selection, e.g. ``(row_indices,)``."""
        return self._read(selection, lambda: self._arr.get_orthogonal_selection(selection))

    def _read(self, selection: Any, read: Callable[[], Any]) -> np.ndarray:
        """Run ``read``; if it fails, find the chunk that does and raise ReplayBufferError naming it."""
        try:
            return np.asarray(read())
        except Exception as exc:  # noqa: BLE001 - decoders raise many types; a failing chunk is confirmed below
            start, stop = _rows(selection, self.shape[0])
            bad = integrity.damaged_chunks(self._arr, start, stop, first_only=True)
            if not bad:
                raise
            key, reason = bad[0]
            raise ReplayBufferError(
                f"{self._where}: {self.name} chunk {key} is damaged ({reason}); {_DAMAGED.format(where=self._where)}"
            ) from exc


def is_zarr_store(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a zarr group (format 3 or 2) at its root (what overwrite may replace)."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file())


class ReplayBuffer:
    """Episodes of time-aligned arrays in a zarr group (or fully in memory as numpy arrays)."""

    def __init__(
        self,
        root: zarr.Group,
        *,
        writable: bool,
        store: Any = None,
        path: Path | None = None,
        arrays: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
        lock: FileLock | None = None,
        check_chunks: bool = True,
    ) -> None:
        self._root = root
        self._store = store
        self._writable = writable
        self._lock = lock
        self.path = path
        self._where = str(path) if path is not None else "<memory>"
        if arrays is None:
            # episode_ends is read before any array shape: every episode it commits is then fully in the arrays
            ends = self._read_ends(root)
            self._data: dict[str, Any] = self._open_arrays("data")
            self._meta: dict[str, Any] = self._open_arrays("meta")
            self._views: dict[str, Any] = {
                **{f"data/{k}": StoreArray(a, f"data/{k}", self._where) for k, a in self._data.items()},
                **{f"meta/{k}": StoreArray(a, f"meta/{k}", self._where) for k, a in self._meta.items()},
            }
        else:  # decompressed numpy arrays (load_into_memory)
            self._data, self._meta = arrays
            self._views = {
                **{f"data/{k}": a for k, a in self._data.items()},
                **{f"meta/{k}": a for k, a in self._meta.items()},
            }
            ends = np.asarray(self._meta["episode_ends"])
        self._compressor = str(root.attrs.get("compressor", "zstd"))
        self._clevel = int(root.attrs.get("clevel", 5))
        self._chunk_bytes = int(root.attrs.get("chunk_bytes", 2**21))
        self._ends = self._validate(ends)
        if arrays is None and check_chunks:
            problems = self._missing_chunks()
            if problems:
                raise ReplayBufferError(f"{problems[0]}; {_DAMAGED.format(where=self._where)}")
        if writable and self._has_uncommitted_tail():
            self._truncate(int(self._ends[-1]) if len(self._ends) else 0, len(self._ends))
            self._root.attrs.update({_APPENDING: False})

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(
        cls,
        path: str | Path | None,
        *,
        attrs: Mapping[str, Any] | None = None,
        compressor: str = "zstd",
        clevel: int = 5,
        chunk_bytes: int = 2**21,
        overwrite: bool = False,
    ) -> "ReplayBuffer":
        """Create an empty store (zarr format 3) at ``path`` and hold it for writing; ``None`` makes one in memory.

        StoreExistsError if something is at ``path`` (also when another process creates it meanwhile);
        ``overwrite`` replaces an existing store, never a directory or file that is not one.
        """
        base = cls._base_attrs(attrs, compressor, clevel, chunk_bytes)
        if path is None:
            root = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
            cls._init_layout(root, base)
            return cls(root, writable=True)
        path = Path(path)
        with cls._built(path, base, overwrite) as (_, lock):
            pass
        return cls._open_locked(path, lock)

    @classmethod
    @contextmanager
    def building(
        cls,
        path: str | Path,
        *,
        attrs: Mapping[str, Any] | None = None,
        compressor: str = "zstd",
        clevel: int = 5,
        chunk_bytes: int = 2**21,
        overwrite: bool = False,
    ) -> Iterator["ReplayBuffer"]:
        """Yield a new store to fill, built beside ``path`` and renamed into place only if the block succeeds.

        Readers never see a partly filled store; the same rules as ``create`` apply to what is at ``path``.
        """
        base = cls._base_attrs(attrs, compressor, clevel, chunk_bytes)
        with cls._built(Path(path), base, overwrite) as (buf, lock):
            yield buf
            buf.close()
        lock.release()

    @staticmethod
    def _base_attrs(attrs: Mapping[str, Any] | None, compressor: str, clevel: int, chunk_bytes: int) -> dict[str, Any]:
        """The attributes of a new store; ReplayBufferError for bad storage settings."""
        if compressor not in COMPRESSORS:
            raise ReplayBufferError(f"unknown compressor {compressor!r}; use one of {COMPRESSORS}")
        if not 0 <= clevel <= 9:
            raise ReplayBufferError(f"clevel must be in 0..9, got {clevel}")
        if chunk_bytes < 1:
            raise ReplayBufferError(f"chunk_bytes must be positive, got {chunk_bytes}")
        base = {"format": FORMAT, "compressor": compressor, "clevel": clevel, "chunk_bytes": chunk_bytes}
        base.update(dict(attrs or {}))
        return base

    @classmethod
    @contextmanager
    def _built(cls, path: Path, attrs: Mapping[str, Any], overwrite: bool) -> Iterator[tuple["ReplayBuffer", FileLock]]:
        """Build a store in a temp directory beside ``path``, locked; publish it at ``path`` after the block."""
        if str(path).endswith(".zip"):
            raise ReplayBufferError(f"{path}: zip stores are read-only here; create a directory store (.zarr)")
        exists_hint = "open it with ReplayBuffer.open(path, mode='a') or pass overwrite=True"
        if path.exists() and not overwrite:
            raise StoreExistsError(f"{path} already exists; {exists_hint}")
        old_lock = cls._lock_for_replacing(path) if overwrite and path.exists() else None
        lock, in_block = None, False
        try:
            # A crash never leaves half a store; the final rename never replaces what another process made.
            with atomic_dir(path, overwrite=overwrite) as tmp:
                root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
                cls._init_layout(root, attrs)
                lock = FileLock(tmp / LOCK_FILE).acquire()
                buf = cls(root, writable=True, path=tmp)
                in_block = True
                yield buf, lock
                in_block = False
                buf.close()
        except FileExistsError:
            if lock is not None:
                lock.release()
            if in_block:
                raise
            raise StoreExistsError(f"{path} was created by another process meanwhile; {exists_hint}") from None
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        finally:
            if old_lock is not None:
                old_lock.release()
        lock.moved_to(path / LOCK_FILE)

    @staticmethod
    def _lock_for_replacing(path: Path) -> FileLock | None:
        """The writer lock of the store at ``path`` that is about to be replaced; refuses anything else."""
        if not is_zarr_store(path):
            raise ReplayBufferError(
                f"{path} exists and is not a zarr store; refusing to replace it (overwrite replaces stores only): "
                "remove it yourself or choose another path"
            )
        if not (path / LOCK_FILE).parent.is_dir():
            return None  # no meta/episode_ends: no writer can hold this store
        return ReplayBuffer._acquire(path, FileLock(path / LOCK_FILE), 0.0, None)

    @staticmethod
    def _acquire(
        path: Path, lock: FileLock, timeout: float | None, on_wait: Callable[[int | None], None] | None
    ) -> FileLock:
        """Take ``lock`` on the store at ``path``; StoreLockedError naming the holder's PID if it stays busy."""
        try:
            return lock.acquire(timeout, on_wait)
        except LockBusyError as exc:
            holder = f"PID {exc.pid}" if exc.pid is not None else "another process"
            holder += " (this process: close the other ReplayBuffer first)" if exc.pid == os.getpid() else ""
            waited = f" after waiting {timeout:g} s" if timeout else ""
            raise StoreLockedError(
                f"{path} is being written by {holder} (lock {path / LOCK_FILE} still held{waited}); "
                "wait for it to finish or write to another store"
            ) from None
        except FileNotFoundError:
            raise ReplayBufferError(f"{path}: missing 'meta/episode_ends'; not a replay buffer store") from None
        except PermissionError as exc:
            raise ReplayBufferError(f"{path}: cannot take the writer lock ({exc.strerror}); no write access?") from None

    @staticmethod
    def _init_layout(root: zarr.Group, attrs: Mapping[str, Any]) -> None:
        """Write the empty groups and ``meta/episode_ends``."""
        root.attrs.update(dict(attrs))
        root.require_group("data")
        meta = root.require_group("meta")
        meta.create_array(
            "episode_ends",
            shape=(0,),
            chunks=(4096,),
            dtype="int64",
            fill_value=0,
            compressors=integrity.with_checksum([zarr.codecs.ZstdCodec()]),
            config=integrity.WRITE_CONFIG,
        )

    @classmethod
    def open(
        cls,
        path: str | Path,
        mode: str = "r",
        *,
        in_memory: bool = False,
        lock_timeout: float | None = 0.0,
        wait_for_writer: float | None = 0.0,
        on_wait: Callable[[int | None], None] | None = None,
        check_chunks: bool = True,
    ) -> "ReplayBuffer":
        """Open a store: ``mode="r"`` read-only, ``"a"`` append; ``in_memory`` loads every array into RAM.

        ``"a"`` takes the writer lock, waiting up to ``lock_timeout`` seconds (None: as long as the other
        writer runs). ``"r"`` takes no lock and sees the committed episodes; ``wait_for_writer`` > 0 (or None)
        first waits for a running writer to finish. ``on_wait(pid)`` is called once before waiting.
        ``check_chunks=False`` skips the check for missing chunks (``verify`` lists them all instead).
        """
        if mode not in ("r", "a"):
            raise ReplayBufferError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise ReplayBufferError(f"{path}: no such store; create it with ReplayBuffer.create or collect demos first")
        if path.is_file():
            if mode == "a":
                raise ReplayBufferError(f"{path}: zip stores open read-only; copy it to a directory store to append")
            return cls._open_zip(path, in_memory, check_chunks)
        if mode == "a":
            return cls._open_locked(path, cls._acquire(path, FileLock(path / LOCK_FILE), lock_timeout, on_wait))
        reader = FileLock(path / LOCK_FILE, shared=True)
        if wait_for_writer != 0 and (path / LOCK_FILE).is_file():
            cls._acquire(path, reader, wait_for_writer, on_wait)
        try:
            buf = cls._from_root(path, cls._open_root(path, str(path), "r"), writable=False, check_chunks=check_chunks)
            return buf.load_into_memory() if in_memory else buf
        finally:
            reader.release()

    @classmethod
    def _open_locked(cls, path: Path, lock: FileLock) -> "ReplayBuffer":
        """Open the directory store at ``path`` for appending under the writer ``lock`` this process holds."""
        try:
            return cls._from_root(path, cls._open_root(path, str(path), "r+"), writable=True, lock=lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_zip(cls, path: Path, in_memory: bool, check_chunks: bool) -> "ReplayBuffer":
        """Open a read-only ``.zarr.zip`` store."""
        try:
            store = zarr.storage.ZipStore(str(path), mode="r")
        except Exception as exc:  # zipfile raises BadZipFile, OSError, ...
            raise ReplayBufferError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None
        buf = cls._from_root(
            path, cls._open_root(path, store, "r"), writable=False, store=store, check_chunks=check_chunks
        )
        return buf.load_into_memory() if in_memory else buf

    @staticmethod
    def _open_root(path: Path, target: Any, mode: str) -> zarr.Group:
        """The store's root group; ReplayBufferError naming the metadata file if it is unreadable."""
        try:
            return zarr.open_group(target, mode=mode)
        except json.JSONDecodeError as exc:
            name = ".zgroup" if (path / ".zgroup").exists() and not (path / "zarr.json").exists() else "zarr.json"
            raise ReplayBufferError(
                f"{path}: {name} is not valid JSON ({exc}); {_DAMAGED.format(where=path)}"
            ) from None
        except Exception as exc:
            raise ReplayBufferError(f"{path}: not a zarr store ({integrity.describe(exc)})") from None

    @classmethod
    def _from_root(cls, path: Path, root: zarr.Group, **kwargs: Any) -> "ReplayBuffer":
        """Check the layout of ``root`` and build the buffer."""
        data = cls._node(path, root, "data")
        if not isinstance(data, zarr.Group):
            raise ReplayBufferError(f"{path}: missing group 'data'; not a replay buffer store")
        meta = cls._node(path, root, "meta")
        if not isinstance(meta, zarr.Group) or cls._node(path, meta, "episode_ends", "meta/") is None:
            raise ReplayBufferError(f"{path}: missing 'meta/episode_ends'; not a replay buffer store")
        _register_optional_codecs()
        try:
            return cls(root, path=path, **kwargs)
        except numcodecs.errors.UnknownCodecError as exc:
            raise ReplayBufferError(
                f"{path}: an array uses a codec that is not installed ({exc}); Diffusion Policy's image stores "
                f"need `pip install imagecodecs`"
            ) from None

    @staticmethod
    def _node(path: Path, group: zarr.Group, name: str, prefix: str = "") -> Any:
        """``group[name]`` (None if absent); ReplayBufferError naming it if its metadata is unreadable."""
        try:
            return group[name]
        except KeyError:
            return None
        except Exception as exc:
            raise ReplayBufferError(
                f"{path}: {prefix}{name} has unreadable metadata ({integrity.describe(exc)}); "
                f"{_DAMAGED.format(where=path)}"
            ) from None

    def _open_arrays(self, group: str) -> dict[str, Any]:
        """The arrays of ``data`` or ``meta``, opened one by one so that unreadable metadata names its key."""
        node = self._root[group]
        if self.path is not None and self.path.is_dir():
            names = sorted(p.name for p in (self.path / group).iterdir() if p.is_dir() and not p.name.startswith("."))
        else:
            names = sorted(node.array_keys())
        arrays = {}
        for name in names:
            try:
                arr = node[name]
            except KeyError:
                raise ReplayBufferError(
                    f"{self._where}: {group}/{name} has no array metadata (zarr.json or .zarray is missing); "
                    f"{_DAMAGED.format(where=self._where)}"
                ) from None
            except Exception as exc:
                raise ReplayBufferError(
                    f"{self._where}: {group}/{name} has unreadable array metadata ({integrity.describe(exc)}); "
                    f"{_DAMAGED.format(where=self._where)}"
                ) from None
            if isinstance(arr, zarr.Array):
                arrays[name] = arr.with_config(integrity.WRITE_CONFIG) if self._writable else arr
        return arrays

    def _read_ends(self, root: zarr.Group) -> np.ndarray:
        """``meta/episode_ends`` as read now (every entry, committed or not)."""
        arr = self._node(self._where, root["meta"], "episode_ends", "meta/")
        if not isinstance(arr, zarr.Array):
            raise ReplayBufferError(f"{self._where}: meta/episode_ends is not an array; not a replay buffer store")
        # The last entry may be in flight (resized, not written yet): its chunk is judged with the other tails.
        missing = integrity.missing_chunks(arr, arr.shape[0] - 1) if integrity.has_checksum(arr) else []
        if missing:
            key = integrity.chunk_key(arr, missing[0])
            raise ReplayBufferError(
                f"{self._where}: meta/episode_ends chunk {key} is missing; {_DAMAGED.format(where=self._where)}"
            )
        return StoreArray(arr, "meta/episode_ends", self._where)[:]

    def load_into_memory(self) -> "ReplayBuffer":
        """Return a read-only copy whose arrays are decompressed numpy arrays (fast random access)."""
        n, e = self.n_steps, self.n_episodes
        attrs = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
        attrs.attrs.update(self.attrs)
        data = {k: np.asarray(self._views[f"data/{k}"][:n]) for k in self._data}
        meta = {k: np.asarray(self._views[f"meta/{k}"][:e]) for k in self._meta}
        meta["episode_ends"] = self._ends.copy()
        return ReplayBuffer(attrs, writable=False, path=self.path, arrays=(data, meta))

    def close(self) -> None:
        """Release the underlying store (zip files hold a handle) and the writer lock."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._writable = False

    def __enter__(self) -> "ReplayBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ validation
    def _validate(self, ends: np.ndarray) -> np.ndarray:
        """Check episode_ends and array lengths; return the committed episode_ends."""
        where = self._where
        if ends.ndim != 1 or ends.dtype.kind not in "iu":
            raise ReplayBufferError(
                f"{where}: meta/episode_ends must be a 1-D integer array, got {ends.dtype} {ends.shape}"
            )
        ends = ends.astype(np.int64)
        bad = np.nonzero(np.diff(np.concatenate([[0], ends])) <= 0)[0]
        committed = ends[: bad[0]] if len(bad) else ends
        n = int(committed[-1]) if len(committed) else 0
        for key, arr in self._data.items():
            length = arr.shape[0] if arr.ndim else 0
            if length < n:
                raise ReplayBufferError(
                    f"{where}: data/{key} has {length} steps but meta/episode_ends ends at {n}; "
                    f"the store is corrupt (arrays of different length)"
                )
        for key, arr in self._meta.items():
            if key != "episode_ends" and arr.shape[0] < len(committed):
                raise ReplayBufferError(
                    f"{where}: meta/{key} has {arr.shape[0]} entries for {len(committed)} episodes; "
                    "the store is corrupt"
                )
        long = [k for k, a in self._data.items() if a.shape[0] > n]
        long_meta = [k for k, a in self._meta.items() if k != "episode_ends" and a.shape[0] > len(committed)]
        if (len(bad) or long or long_meta) and not self._tail_explained(long, long_meta):
            if len(bad):
                i = int(bad[0])
                raise ReplayBufferError(
                    f"{where}: meta/episode_ends is not strictly increasing (index {i}: {ends[max(i - 1, 0)]}"
                    f" -> {ends[i]}); the store is corrupt"
                )
            key = long[0] if long else None
            if key is not None:
                raise ReplayBufferError(
                    f"{where}: data/{key} has {self._data[key].shape[0]} steps but meta/episode_ends ends at {n}; "
                    f"the store is corrupt (arrays of different length)"
                )
            raise ReplayBufferError(
                f"{where}: meta/{long_meta[0]} has {self._meta[long_meta[0]].shape[0]} entries for "
                f"{len(committed)} episodes; the store is corrupt"
            )
        return committed

    def _tail_explained(self, long: list[str], long_meta: list[str]) -> bool:
        """Whether entries beyond the committed episodes are an append (running or interrupted), not corruption.

        Called after episode_ends and the shapes were read: a writer that holds the lock now, or the
        ``appending`` flag as it is now, explains them; so does an episode_ends that, read again, now covers
        them (the append committed and its writer let go in between).
        """
        if self._root.attrs.get(_APPENDING, False):
            return True
        if self._writable or self.path is None or not self.path.is_dir():
            return False  # a writer holds the lock itself; memory and zip stores have no concurrent writer
        if is_locked(self.path / LOCK_FILE):
            return True
        fresh = zarr.open_group(str(self.path), mode="r")
        if fresh.attrs.get(_APPENDING, False):
            return True
        ends = np.asarray(fresh["meta"]["episode_ends"][:], dtype=np.int64)
        if len(ends) == 0 or (np.diff(np.concatenate([[0], ends])) <= 0).any():
            return False
        return all(self._data[k].shape[0] <= ends[-1] for k in long) and all(
            self._meta[k].shape[0] <= len(ends) for k in long_meta
        )

    def _spans(self) -> list[tuple[str, Any, int]]:
        """(name, zarr array, committed rows) of every array of a store on disk."""
        spans = [(f"data/{k}", a, self.n_steps) for k, a in self._data.items()]
        return spans + [(f"meta/{k}", a, self.n_episodes) for k, a in self._meta.items()]

    def _missing_chunks(self) -> list[str]:
        """One line per checksummed array with chunks missing inside its committed rows."""
        problems = []
        for name, arr, stop in self._spans():
            missing = integrity.missing_chunks(arr, stop) if integrity.has_checksum(arr) else []
            if missing:
                start, end = integrity.chunk_rows(arr, missing[0])
                more = f" ({len(missing) - 1} more chunks of it are missing too)" if len(missing) > 1 else ""
                problems.append(
                    f"{self._where}: {name} chunk {integrity.chunk_key(arr, missing[0])} (rows {start}..{end - 1}) "
                    f"is missing{more}"
                )
        return problems

    def verify(self) -> StoreReport:
        """Decode every chunk of the committed rows of every array (checking crc32c) and list missing ones."""
        if isinstance(self._meta["episode_ends"], np.ndarray):
            raise ReplayBufferError(f"{self._where}: loaded into memory; verify the store opened from disk")
        problems, chunks, unchecked = [], 0, []
        for name, arr, stop in self._spans():
            if integrity.has_checksum(arr):
                for coords in integrity.missing_chunks(arr, stop):
                    start, end = integrity.chunk_rows(arr, coords)
                    key = integrity.chunk_key(arr, coords)
                    problems.append(f"{self._where}: {name} chunk {key} (rows {start}..{end - 1}) is missing")
            else:
                unchecked.append(name)
            for key, reason in integrity.damaged_chunks(arr, 0, stop):
                problems.append(f"{self._where}: {name} chunk {key} is damaged ({reason})")
            chunks += sum(1 for _ in integrity.chunk_coords(arr, 0, stop))
        return StoreReport(problems, chunks, unchecked)

    def _has_uncommitted_tail(self) -> bool:
        """True if an interrupted append left data beyond the last committed episode."""
        n = self.n_steps
        e = len(self._ends)
        return any(a.shape[0] > n for a in self._data.values()) or any(a.shape[0] > e for a in self._meta.values())

    def _truncate(self, n_steps: int, n_episodes: int) -> None:
        """Shrink every array back to the committed length."""
        for arr in self._data.values():
            if arr.shape[0] != n_steps:
                arr.resize((n_steps, *arr.shape[1:]))
        for arr in self._meta.values():
            if arr.shape[0] != n_episodes:
                arr.resize((n_episodes,))

    # ------------------------------------------------------------------ reading
    @property
    def attrs(self) -> dict[str, Any]:
        """Store attributes (a copy, without the internal append flag)."""
        return {k: v for k, v in self._root.attrs.items() if k != _APPENDING}

    @property
    def episode_ends(self) -> np.ndarray:
        """(E,) int64 exclusive end index of each episode."""
        return self._ends.copy()

    @property
    def episode_lengths(self) -> np.ndarray:
        """(E,) int64 number of steps of each episode."""
        return np.diff(np.concatenate([[0], self._ends])).astype(np.int64)

    @property
    def n_episodes(self) -> int:
        """Number of committed episodes."""
        return int(len(self._ends))

    @property
    def n_steps(self) -> int:
        """Number of committed steps (sum of episode lengths)."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def keys(self) -> list[str]:
        """Data keys (``data/<key>``), sorted."""
        return list(self._data)

    def meta_keys(self) -> list[str]:
        """Per-episode meta keys other than ``episode_ends``."""
        return [k for k in self._meta if k != "episode_ends"]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return self.n_steps

    def array(self, key: str) -> Any:
        """The array of ``key`` without reading it (a ``StoreArray``, or numpy when in memory); slice to read."""
        self._check_key(key)
        return self._views[f"data/{key}"]

    def __getitem__(self, key: str) -> np.ndarray:
        """The whole array of ``key`` (committed steps), as numpy (a view when in memory)."""
        self._check_key(key)
        return np.asarray(self._views[f"data/{key}"][: self.n_steps])

    def _check_key(self, key: str) -> None:
        """KeyError listing the keys unless ``key`` is a data key."""
        if key not in self._data:
            raise KeyError(f"replay buffer has no key {key!r}; keys: {self.keys()}")

    def get_episode(self, i: int) -> dict[str, np.ndarray]:
        """All arrays of episode ``i`` (negative indices count from the end)."""
        e = self.n_episodes
        if not -e <= i < e:
            raise IndexError(f"episode {i} out of range for a buffer with {e} episodes")
        i %= e
        start = int(self._ends[i - 1]) if i > 0 else 0
        end = int(self._ends[i])
        return {k: np.asarray(self._views[f"data/{k}"][start:end]) for k in self._data}

    def episode_meta(self, name: str) -> np.ndarray:
        """(E,) per-episode values stored under ``meta/<name>``."""
        if name not in self._meta:
            raise KeyError(f"replay buffer has no meta key {name!r}; meta keys: {list(self._meta)}")
        return np.asarray(self._views[f"meta/{name}"][: self.n_episodes])

    def set_attrs(self, **kw: Any) -> None:
        """Update store attributes (JSON-serializable values)."""
        self._require_writable()
        self._root.attrs.update(kw)

    # ------------------------------------------------------------------ writing
    def _require_writable(self) -> None:
        """ReplayBufferError unless this buffer may write (opened with mode="a" and not closed)."""
        if not self._writable:
            raise ReplayBufferError(
                f"{self._where}: read-only (opened with mode='r', loaded into memory or closed); "
                f"open with mode='a' to write"
            )

    def _chunk_len(self, shape: tuple[int, ...], itemsize: int) -> int:
        """Time steps per chunk so a chunk holds about ``chunk_bytes``."""
        step_bytes = max(1, itemsize * int(np.prod(shape[1:], dtype=np.int64)))
        return max(1, self._chunk_bytes // step_bytes)

    def _check_episode(self, data: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate keys, lengths, shapes, dtypes and finiteness; return arrays cast to the store dtypes."""
        if not data:
            raise ReplayBufferError("add_episode: empty dict; pass one array per key")
        arrays = {k: np.asarray(v) for k, v in data.items()}
        if self._data:
            missing = sorted(set(self._data) - set(arrays))
            extra = sorted(set(arrays) - set(self._data))
            if missing or extra:
                raise ReplayBufferError(
                    f"add_episode: keys differ from the store (missing {missing}, extra {extra}); "
                    f"pass exactly {sorted(self._data)}"
                )
        lengths = {k: (a.shape[0] if a.ndim else -1) for k, a in arrays.items()}
        if any(n < 0 for n in lengths.values()):
            raise ReplayBufferError(f"add_episode: scalar values are not time series: {lengths}")
        if len(set(lengths.values())) != 1:
            raise ReplayBufferError(f"add_episode: arrays of different length {lengths}; every key needs the same T")
        if next(iter(lengths.values())) == 0:
            raise ReplayBufferError("add_episode: empty episode (T = 0); nothing to store")
        out = {}
        for key, value in arrays.items():
            if value.dtype.kind not in "biuf":
                raise ReplayBufferError(f"add_episode: key {key!r} has unsupported dtype {value.dtype}")
            if key in self._data:
                arr = self._data[key]
                if value.shape[1:] != arr.shape[1:]:
                    raise ReplayBufferError(
                        f"add_episode: key {key!r} has per-step shape {value.shape[1:]}, the store has {arr.shape[1:]}"
                    )
                value = _safe_cast(f"key {key!r}", value, np.dtype(arr.dtype))
            elif value.dtype == np.float64:
                value = value.astype(np.float32)  # the data format stores floats as float32
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int(np.argwhere(~np.isfinite(value))[0][0])
                raise ReplayBufferError(
                    f"add_episode: key {key!r} has NaN/inf (first at step {bad}); clean the episode"
                )
            out[key] = np.ascontiguousarray(value)
        return out

    def add_episode(self, data: Mapping[str, Any], episode_meta: Mapping[str, Any] | None = None) -> None:
        """Append one episode ``{key: (T, ...)}`` (and per-episode ``meta/<name>`` values) atomically."""
        self._require_writable()
        arrays = self._check_episode(data)
        meta = dict(episode_meta or {})
        if "episode_ends" in meta:
            raise ReplayBufferError("add_episode: 'episode_ends' is reserved; choose another meta name")
        for name, value in meta.items():
            if not np.isscalar(value) or isinstance(value, bytes):
                raise ReplayBufferError(f"add_episode: meta {name!r} must be a scalar (int, float, str, bool)")
        known_meta = set(self.meta_keys())
        if known_meta and self.n_episodes and set(meta) != known_meta:
            raise ReplayBufferError(
                f"add_episode: meta keys {sorted(meta)} differ from the store's {sorted(known_meta)}"
            )
        meta = {
            name: _safe_cast(f"meta {name!r}", np.asarray(v), np.dtype(self._meta[name].dtype))
            if name in self._meta
            else np.asarray(v)
            for name, v in meta.items()
        }
        n0, e0 = self.n_steps, self.n_episodes
        t = next(iter(arrays.values())).shape[0]
        zarr_format = self._root.metadata.zarr_format
        self._root.attrs.update({_APPENDING: True})
        try:
            for key, value in arrays.items():
                if key not in self._data:
                    self._add_array(
                        "data",
                        key,
                        shape=(0, *value.shape[1:]),
                        dtype=value.dtype,
                        chunks=(self._chunk_len(value.shape, value.itemsize), *value.shape[1:]),
                        compressors=_blosc(self._compressor, self._clevel, value.itemsize, zarr_format),
                        fill_value=0,
                    )
                arr = self._data[key]
                arr.resize((n0 + t, *arr.shape[1:]))
                arr[n0 : n0 + t] = value
            for name, value in meta.items():
                if name not in self._meta:
                    is_str = value.dtype.kind == "U"
                    self._add_array(
                        "meta",
                        name,
                        shape=(e0,),
                        chunks=(4096,),
                        dtype=str if is_str else value.dtype,
                        fill_value="" if is_str else 0,
                        compressors=integrity.with_checksum([zarr.codecs.ZstdCodec()]) if zarr_format == 3 else "auto",
                    )
                arr = self._meta[name]
                arr.resize((e0 + 1,))
                arr[e0] = value
            ends = self._meta["episode_ends"]
            ends.resize((e0 + 1,))
            ends[e0] = n0 + t  # the commit point
        except BaseException:
            self._truncate(n0, e0)
            self._root.attrs.update({_APPENDING: False})
            raise
        self._ends = np.append(self._ends, np.int64(n0 + t))
        self._root.attrs.update({_APPENDING: False})

    def _add_array(self, group: str, name: str, **spec: Any) -> None:
        """Create ``group/name`` (every chunk stored) and register it for writing and checked reads."""
        arr = self._root[group].create_array(name, config=integrity.WRITE_CONFIG, **spec)
        (self._data if group == "data" else self._meta)[name] = arr
        self._views[f"{group}/{name}"] = StoreArray(arr, f"{group}/{name}", self._where)

    def summary(self) -> str:
        """A short human-readable description: episodes, steps, keys with shape and dtype."""
        lines = [f"ReplayBuffer {self.path or '<memory>'}: {self.n_episodes} episodes, {self.n_steps} steps"]
        if self.n_episodes:
            lens = self.episode_lengths
            lines.append(f"  episode length: min {lens.min()}, mean {lens.mean():.1f}, max {lens.max()}")
        for key in self._data:
            arr = self._data[key]
            lines.append(f"  data/{key}: {tuple(arr.shape[1:])} {arr.dtype}")
        for key in self.meta_keys():
            lines.append(f"  meta/{key}: {self._meta[key].dtype}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(path={self.path}, n_episodes={self.n_episodes}, n_steps={self.n_steps}, keys={self.keys()})"
        )
