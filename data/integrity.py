"""Per-chunk integrity of zarr arrays: the crc32c codec, missing chunks, and finding the chunk that fails.

Arrays we write end their codec chain with zarr's ``crc32c`` codec, so every chunk carries a checksum
that zarr verifies when it decodes the chunk, and they store every chunk (also chunks equal to the
fill value), so a chunk file missing inside the committed rows is damage, not an all-zero chunk
(zarr would silently return its fill value). Arrays without the codec (Diffusion Policy's zarr v2
stores, stores written before checksums) are read as they are: a decompression failure is still caught,
a missing chunk or a flipped bit of uncompressed data is not.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import zarr
import zarr.codecs
from zarr.core.sync import sync

WRITE_CONFIG = {"write_empty_chunks": True}  # every chunk is stored, so a missing chunk file means damage


def with_checksum(compressors: list[Any] | None) -> list[Any]:
    """A zarr v3 bytes-to-bytes codec chain that ends with the crc32c checksum."""
    return [*(compressors or []), zarr.codecs.Crc32cCodec()]


def has_checksum(arr: zarr.Array) -> bool:
    """Whether every chunk of ``arr`` carries a crc32c checksum (zarr v3 arrays we wrote)."""
    return arr.metadata.zarr_format == 3 and any(isinstance(c, zarr.codecs.Crc32cCodec) for c in arr.compressors)


def chunk_coords(arr: zarr.Array, start: int, stop: int) -> Iterator[tuple[int, ...]]:
    """Grid coordinates of the chunks holding rows ``[start, stop)`` (every chunk along the other axes)."""
    rows = arr.chunks[0]
    grids = [range(start // rows, -(-stop // rows))]
    grids += [range(-(-size // chunk)) for size, chunk in zip(arr.shape[1:], arr.chunks[1:], strict=True)]
    return itertools.product(*grids)


def chunk_key(arr: zarr.Array, coords: tuple[int, ...]) -> str:
    """The store key of one chunk, relative to the array (e.g. ``c/3/0/0/0``; ``3.0.0.0`` in zarr v2)."""
    return arr.metadata.encode_chunk_key(coords)


def chunk_rows(arr: zarr.Array, coords: tuple[int, ...]) -> tuple[int, int]:
    """The rows ``[start, stop)`` a chunk covers (cut at the array's length)."""
    rows = arr.chunks[0]
    return coords[0] * rows, min((coords[0] + 1) * rows, arr.shape[0])


def _chunk_selection(arr: zarr.Array, coords: tuple[int, ...]) -> tuple[slice, ...]:
    """The region of one chunk as a tuple of slices."""
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, arr.chunks, arr.shape, strict=True))


async def _list_keys(arr: zarr.Array) -> list[str]:
    """Every key stored under the array's prefix."""
    return [key async for key in arr.store_path.store.list_prefix(arr.store_path.path)]


def missing_chunks(arr: zarr.Array, stop: int) -> list[tuple[int, ...]]:
    """Grid coordinates of the chunks of rows ``[0, stop)`` that are not in the store."""
    if stop <= 0 or arr.ndim == 0:
        return []
    prefix = f"{arr.store_path.path}/" if arr.store_path.path else ""
    stored = {key.removeprefix(prefix) for key in sync(_list_keys(arr))}
    return [coords for coords in chunk_coords(arr, 0, stop) if chunk_key(arr, coords) not in stored]


def damaged_chunks(arr: zarr.Array, start: int, stop: int, *, first_only: bool = False) -> list[tuple[str, str]]:
    """(chunk key, reason) of each chunk of rows ``[start, stop)`` that fails to decode or to match its checksum."""
    found = []
    for coords in chunk_coords(arr, start, stop):
        try:
            arr[_chunk_selection(arr, coords)]
        except Exception as exc:  # noqa: BLE001 - any decoder failure (checksum, blosc, zstd, jpeg2k) is damage
            reason = "crc32c checksum mismatch" if "checksum do not match" in str(exc) else describe(exc)
            found.append((chunk_key(arr, coords), reason))
            if first_only:
                break
    return found


def describe(exc: BaseException) -> str:
    """The exception's type and first message line, for a one-line report."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
