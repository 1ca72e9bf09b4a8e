"""Zarr-backed episode store (``ReplayBuffer``).

Layout (see ARCHITECTURE.md)::

    <name>.zarr/
      data/<key>         (N, ...)  time is axis 0, chunked along time
      meta/episode_ends  (E,) int64, exclusive end of each episode, strictly increasing, last == N
      meta/<name>        (E,)      optional per-episode values (e.g. the expert's mode, the seed)
      attrs              {"format": "actchunk.replay/1", ...}

Writes zarr format 3 (Blosc/zstd by default); reads format 3, format 2 directories and
``.zarr.zip`` files, so Diffusion Policy's stores open unchanged.

Appending is atomic for readers: the data arrays grow first and ``meta/episode_ends`` is
written last. While an append is in flight the group attribute ``appending`` is set; a store
whose data arrays are longer than ``episode_ends[-1]`` is accepted only with that flag (the
uncommitted tail of an interrupted append is hidden from readers and dropped by the next
writer); without it the store is refused as inconsistent. An exception inside ``add_episode``
rolls the arrays back before it propagates.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numcodecs
import numcodecs.errors
import numpy as np
import zarr
import zarr.codecs
import zarr.storage

from data.atomic import atomic_dir

FORMAT = "actchunk.replay/1"
COMPRESSORS = ("zstd", "lz4", "lz4hc", "blosclz", "zlib", "none")
_APPENDING = "appending"


class ReplayBufferError(ValueError):
    """A store that cannot be opened or an episode that cannot be added."""


@functools.cache
def _register_optional_codecs() -> None:
    """Register imagecodecs' numcodecs (JPEG 2000 etc., used by Diffusion Policy's image stores) once."""
    try:
        from imagecodecs.numcodecs import register_codecs
    except ImportError:
        return
    register_codecs(verbose=False)


def _blosc(cname: str, clevel: int, itemsize: int, zarr_format: int) -> Any:
    """Blosc compressor for one array (bit-shuffle for multi-byte items) in the store's zarr format."""
    if cname == "none":
        return None
    if zarr_format == 2:  # appending to a Diffusion Policy (format 2) store needs numcodecs' codec
        return numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=numcodecs.Blosc.BITSHUFFLE if itemsize > 1 else 0)
    shuffle = "bitshuffle" if itemsize > 1 else "noshuffle"
    return [zarr.codecs.BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle)]


def _safe_cast(key: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast ``value`` to ``dtype`` if no information is lost (floats may narrow to float32), else raise."""
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
            f"add_episode: key {key!r} values {value.min()}..{value.max()} do not fit the store's dtype {dtype}"
        )
    raise ReplayBufferError(
        f"add_episode: key {key!r} dtype {value.dtype} cannot be cast safely to the store's dtype {dtype}; "
        f"convert it before add_episode"
    )


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
    ) -> None:
        self._root = root
        self._store = store
        self._writable = writable
        self.path = path
        if arrays is None:
            self._data: dict[str, Any] = {k: root["data"][k] for k in sorted(root["data"].array_keys())}
            self._meta: dict[str, Any] = {k: root["meta"][k] for k in sorted(root["meta"].array_keys())}
        else:  # decompressed numpy arrays (load_into_memory)
            self._data, self._meta = arrays
        self._compressor = str(root.attrs.get("compressor", "zstd"))
        self._clevel = int(root.attrs.get("clevel", 5))
        self._chunk_bytes = int(root.attrs.get("chunk_bytes", 2**21))
        self._ends = self._validate()
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
        """Create an empty store (zarr format 3) at ``path``; ``None`` makes an in-memory store."""
        if compressor not in COMPRESSORS:
            raise ReplayBufferError(f"unknown compressor {compressor!r}; use one of {COMPRESSORS}")
        if not 0 <= clevel <= 9:
            raise ReplayBufferError(f"clevel must be in 0..9, got {clevel}")
        if chunk_bytes < 1:
            raise ReplayBufferError(f"chunk_bytes must be positive, got {chunk_bytes}")
        base = {"format": FORMAT, "compressor": compressor, "clevel": clevel, "chunk_bytes": chunk_bytes}
        base.update(dict(attrs or {}))
        if path is None:
            root = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
            cls._init_layout(root, base)
            return cls(root, writable=True)
        path = Path(path)
        if str(path).endswith(".zip"):
            raise ReplayBufferError(f"{path}: zip stores are read-only here; create a directory store (.zarr)")
        if path.exists() and not overwrite:
            raise ReplayBufferError(
                f"{path} already exists; open it with ReplayBuffer.open(path, mode='a') or pass overwrite=True"
            )
        # Build the empty layout beside the target, then rename: a crash never leaves half a store.
        with atomic_dir(path, overwrite=True) as tmp:
            cls._init_layout(zarr.open_group(str(tmp), mode="w", zarr_format=3), base)
        return cls.open(path, mode="a")

    @staticmethod
    def _init_layout(root: zarr.Group, attrs: Mapping[str, Any]) -> None:
        """Write the empty groups and ``meta/episode_ends``."""
        root.attrs.update(dict(attrs))
        root.require_group("data")
        meta = root.require_group("meta")
        meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64", fill_value=0)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", *, in_memory: bool = False) -> "ReplayBuffer":
        """Open a store: ``mode="r"`` read-only, ``"a"`` append; ``in_memory`` loads every array into RAM."""
        if mode not in ("r", "a"):
            raise ReplayBufferError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise ReplayBufferError(f"{path}: no such store; create it with ReplayBuffer.create or collect demos first")
        store: Any = None
        if path.is_file():
            if mode == "a":
                raise ReplayBufferError(f"{path}: zip stores open read-only; copy it to a directory store to append")
            try:
                store = zarr.storage.ZipStore(str(path), mode="r")
            except Exception as exc:  # zipfile raises BadZipFile, OSError, ...
                raise ReplayBufferError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None
            target: Any = store
        else:
            target = str(path)
        try:
            root = zarr.open_group(target, mode="r" if mode == "r" else "r+")
        except Exception as exc:
            raise ReplayBufferError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None
        if "data" not in root or not isinstance(root["data"], zarr.Group):
            raise ReplayBufferError(f"{path}: missing group 'data'; not a replay buffer store")
        if "meta" not in root or "episode_ends" not in root["meta"]:
            raise ReplayBufferError(f"{path}: missing 'meta/episode_ends'; not a replay buffer store")
        _register_optional_codecs()
        try:
            buf = cls(root, writable=mode == "a", store=store, path=path)
        except numcodecs.errors.UnknownCodecError as exc:
            raise ReplayBufferError(
                f"{path}: an array uses a codec that is not installed ({exc}); Diffusion Policy's image stores "
                f"need `pip install imagecodecs`"
            ) from None
        return buf.load_into_memory() if in_memory else buf

    def load_into_memory(self) -> "ReplayBuffer":
        """Return a read-only copy whose arrays are decompressed numpy arrays (fast random access)."""
        n, e = self.n_steps, self.n_episodes
        attrs = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
        attrs.attrs.update(self.attrs)
        data = {k: np.asarray(a[:n]) for k, a in self._data.items()}
        meta = {k: np.asarray(a[:e]) for k, a in self._meta.items()}
        return ReplayBuffer(attrs, writable=False, path=self.path, arrays=(data, meta))

    def close(self) -> None:
        """Release the underlying store (zip files hold a handle)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "ReplayBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> np.ndarray:
        """Check episode_ends and array lengths; return the committed episode_ends."""
        where = str(self.path) if self.path is not None else "<memory>"
        ends = np.asarray(self._meta["episode_ends"][:])
        if ends.ndim != 1 or ends.dtype.kind not in "iu":
            raise ReplayBufferError(
                f"{where}: meta/episode_ends must be a 1-D integer array, got {ends.dtype} {ends.shape}"
            )
        ends = ends.astype(np.int64)
        appending = bool(self._root.attrs.get(_APPENDING, False))
        bad = np.nonzero(np.diff(np.concatenate([[0], ends])) <= 0)[0]
        if len(bad):
            if appending:
                ends = ends[: bad[0]]  # entries of an append that never committed
            else:
                raise ReplayBufferError(
                    f"{where}: meta/episode_ends is not strictly increasing (index {bad[0]}: {ends[max(bad[0] - 1, 0)]}"
                    f" -> {ends[bad[0]]}); the store is corrupt"
                )
        n = int(ends[-1]) if len(ends) else 0
        for key, arr in self._data.items():
            length = arr.shape[0] if arr.ndim else 0
            if length < n or (length > n and not appending):
                raise ReplayBufferError(
                    f"{where}: data/{key} has {length} steps but meta/episode_ends ends at {n}; "
                    f"the store is corrupt (arrays of different length)"
                )
        for key, arr in self._meta.items():
            if key != "episode_ends" and arr.shape[0] < len(ends):
                raise ReplayBufferError(
                    f"{where}: meta/{key} has {arr.shape[0]} entries for {len(ends)} episodes; the store is corrupt"
                )
        return ends

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
        """The array of ``key`` without reading it (zarr array, or numpy when in memory); slice to read."""
        self._check_key(key)
        return self._data[key]

    def __getitem__(self, key: str) -> np.ndarray:
        """The whole array of ``key`` (committed steps), as numpy (a view when in memory)."""
        self._check_key(key)
        return np.asarray(self._data[key][: self.n_steps])

    def _check_key(self, key: str) -> None:
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
        return {k: np.asarray(a[start:end]) for k, a in self._data.items()}

    def episode_meta(self, name: str) -> np.ndarray:
        """(E,) per-episode values stored under ``meta/<name>``."""
        if name not in self._meta:
            raise KeyError(f"replay buffer has no meta key {name!r}; meta keys: {list(self._meta)}")
        return np.asarray(self._meta[name][: self.n_episodes])

    def set_attrs(self, **kw: Any) -> None:
        """Update store attributes (JSON-serializable values)."""
        self._require_writable()
        self._root.attrs.update(kw)

    # ------------------------------------------------------------------ writing
    def _require_writable(self) -> None:
        if not self._writable:
            raise ReplayBufferError(
                f"{self.path or '<memory>'}: read-only (opened with mode='r' or loaded into memory); "
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
                value = _safe_cast(key, value, np.dtype(arr.dtype))
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
        n0, e0 = self.n_steps, self.n_episodes
        t = next(iter(arrays.values())).shape[0]
        self._root.attrs.update({_APPENDING: True})
        try:
            for key, value in arrays.items():
                if key not in self._data:
                    self._data[key] = self._root["data"].create_array(
                        key,
                        shape=(0, *value.shape[1:]),
                        dtype=value.dtype,
                        chunks=(self._chunk_len(value.shape, value.itemsize), *value.shape[1:]),
                        compressors=_blosc(
                            self._compressor, self._clevel, value.itemsize, self._root.metadata.zarr_format
                        ),
                        fill_value=0,
                    )
                arr = self._data[key]
                arr.resize((n0 + t, *arr.shape[1:]))
                arr[n0 : n0 + t] = value
            for name, value in meta.items():
                value = np.asarray(value)
                if name not in self._meta:
                    is_str = value.dtype.kind == "U"
                    self._meta[name] = self._root["meta"].create_array(
                        name,
                        shape=(e0,),
                        chunks=(4096,),
                        dtype=str if is_str else value.dtype,
                        fill_value="" if is_str else 0,
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
