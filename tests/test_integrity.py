"""Tests for data/integrity.py: checksummed chunk chains, every chunk stored, missing and damaged chunks found."""

from __future__ import annotations

import numpy as np
import zarr

from data import integrity


def _array(root: zarr.Group, checksum: bool = True) -> zarr.Array:
    arr = root.create_array(
        "x",
        shape=(10, 3),
        chunks=(4, 2),
        dtype="float32",
        fill_value=0,
        compressors=integrity.with_checksum(None) if checksum else None,
        config=integrity.WRITE_CONFIG,
    )
    arr[:] = 0  # all fill value: stored anyway, so a missing file is damage
    return arr


def test_chunks_are_stored_even_when_empty_and_missing_ones_are_found(tmp_path):
    arr = _array(zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3))
    assert integrity.has_checksum(arr) and arr.nchunks_initialized == 6
    assert list(integrity.chunk_coords(arr, 4, 9)) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert integrity.chunk_key(arr, (2, 1)) == "c/2/1" and integrity.chunk_rows(arr, (2, 1)) == (8, 10)
    (tmp_path / "s.zarr" / "x" / "c" / "2" / "1").unlink()
    assert integrity.missing_chunks(arr, 8) == [] and integrity.missing_chunks(arr, 9) == [(2, 1)]


def test_damaged_chunks_fail_their_checksum(tmp_path):
    arr = _array(zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3))
    arr[:] = np.arange(30, dtype=np.float32).reshape(10, 3)
    chunk = tmp_path / "s.zarr" / "x" / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[0] ^= 1
    chunk.write_bytes(bytes(raw))
    assert integrity.damaged_chunks(arr, 0, 10) == [("c/1/0", "crc32c checksum mismatch")]
    assert integrity.damaged_chunks(arr, 0, 4) == []


def test_arrays_without_the_codec_are_told_apart(tmp_path):
    v2 = _array(zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2), checksum=False)
    v3 = _array(zarr.open_group(str(tmp_path / "v3.zarr"), mode="w", zarr_format=3), checksum=False)
    assert not integrity.has_checksum(v2) and not integrity.has_checksum(v3)
    assert integrity.chunk_key(v2, (1, 0)) == "1.0"
