"""Tests for data/atomic.py: a write that fails half way leaves the old file and no temp file behind."""

from __future__ import annotations

import json
import os

import pytest

from data.atomic import atomic_dir, atomic_path, remove_stale_temps, write_json_atomic, write_text_atomic


def test_write_that_fails_half_way_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write('{"new": ')  # half of the new content reaches the temp file ...
            raise RuntimeError("disk full")  # ... then the writer fails
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_successful_writes_replace_the_target_with_the_mode_asked_for(tmp_path):
    target = tmp_path / "sub" / "table.md"  # the parent is created
    write_text_atomic(target, "a\n")
    write_text_atomic(target, "b\n", mode=0o644)
    assert target.read_text() == "b\n" and (os.stat(target).st_mode & 0o777) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.md"]
    with atomic_path(tmp_path / "video.mp4") as tmp:
        assert tmp.suffix == ".mp4" and tmp.parent == tmp_path  # writers that pick a format by suffix still can
        tmp.write_bytes(b"x")
    assert (tmp_path / "video.mp4").read_bytes() == b"x"


def test_directory_trees_appear_whole_or_not_at_all(tmp_path):
    store = tmp_path / "demo.zarr"
    with pytest.raises(ValueError, match="half"):
        with atomic_dir(store) as tmp:
            (tmp / "data").mkdir(parents=True)
            (tmp / "data" / "chunk").write_bytes(b"1")
            raise ValueError("half written")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(store) as tmp:
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert (store / "zarr.json").read_text() == "{}"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_dir(store):
            pass
    with atomic_dir(store, overwrite=True) as tmp:
        tmp.mkdir()
    assert list(store.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["demo.zarr"]


def test_a_tree_created_meanwhile_is_never_replaced_and_stale_temps_are_removed(tmp_path):
    store = tmp_path / "demo.zarr"
    with pytest.raises(FileExistsError, match="created by another process meanwhile"):
        with atomic_dir(store) as tmp:
            tmp.mkdir()
            (tmp / "mine").write_text("1")
            store.mkdir()  # another process publishes first
            (store / "theirs").write_text("2")
    assert [p.name for p in store.iterdir()] == ["theirs"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "demo.zarr"
    ]
    stale = tmp_path / ".latest.tmp-4242-0123abcd.ckpt"
    stale.write_bytes(b"x")
    (tmp_path / ".hidden").write_text("kept")
    assert remove_stale_temps(tmp_path) == [stale] and (tmp_path / ".hidden").exists()
