"""Tests for data/replay_buffer.py: round trips, DP-layout stores, bad input, interrupted appends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.storage

from data.replay_buffer import ReplayBuffer, ReplayBufferError, StoreLockedError


def _episode(t: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, size=(t, 8, 8, 3), dtype=np.uint8),
        "agent_pos": rng.normal(size=(t, 2)).astype(np.float32),
        "action": rng.normal(size=(t, 2)).astype(np.float32),
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "demo.zarr"
    buf = ReplayBuffer.create(path, attrs={"task": "unit"})
    for i, t in enumerate([5, 7, 3]):
        buf.add_episode(_episode(t, i), {"mode": i % 2, "seed": 100 + i})
    return path


def test_round_trip(store: Path) -> None:
    buf = ReplayBuffer.open(store)
    assert buf.n_episodes == 3 and buf.n_steps == 15
    np.testing.assert_array_equal(buf.episode_ends, [5, 12, 15])
    np.testing.assert_array_equal(buf.episode_lengths, [5, 7, 3])
    assert buf.keys() == ["action", "agent_pos", "image"]
    for i, t in enumerate([5, 7, 3]):
        ep = buf.get_episode(i)
        for k, v in _episode(t, i).items():
            np.testing.assert_array_equal(ep[k], v)
            assert ep[k].dtype == v.dtype
    np.testing.assert_array_equal(buf.episode_meta("mode"), [0, 1, 0])
    np.testing.assert_array_equal(buf.episode_meta("seed"), [100, 101, 102])
    assert buf["action"].shape == (15, 2)
    assert buf.attrs["task"] == "unit" and buf.attrs["format"] == "actchunk.replay/1"
    np.testing.assert_array_equal(buf.get_episode(-1)["action"], _episode(3, 2)["action"])


def test_writes_zarr_v3_with_time_chunks_and_zstd(store: Path) -> None:
    meta = json.loads((store / "data" / "image" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    blosc = [c for c in meta["codecs"] if c["name"] == "blosc"]
    assert blosc and blosc[0]["configuration"]["cname"] == "zstd"
    chunk = meta["chunk_grid"]["configuration"]["chunk_shape"]
    assert chunk[1:] == [8, 8, 3]  # chunked along time only


def test_compressor_configurable(tmp_path: Path) -> None:
    buf = ReplayBuffer.create(tmp_path / "lz4.zarr", compressor="lz4", clevel=1, chunk_bytes=64)
    buf.add_episode(_episode(10, 0))
    meta = json.loads((tmp_path / "lz4.zarr" / "data" / "action" / "zarr.json").read_text())
    assert meta["codecs"][-2]["configuration"]["cname"] == "lz4" and meta["codecs"][-1] == {"name": "crc32c"}
    assert meta["chunk_grid"]["configuration"]["chunk_shape"][0] == 8  # 64 bytes / 8 bytes per step
    with pytest.raises(ReplayBufferError, match="compressor"):
        ReplayBuffer.create(tmp_path / "bad.zarr", compressor="gzip9")


def test_in_memory_store_and_load(store: Path) -> None:
    mem = ReplayBuffer.create(None)
    mem.add_episode(_episode(4, 0))
    assert mem.n_steps == 4 and mem.path is None
    loaded = ReplayBuffer.open(store, in_memory=True)
    assert isinstance(loaded.array("image"), np.ndarray)
    np.testing.assert_array_equal(loaded["image"], ReplayBuffer.open(store)["image"])
    np.testing.assert_array_equal(loaded.episode_meta("mode"), [0, 1, 0])
    with pytest.raises(ReplayBufferError, match="read-only"):
        loaded.add_episode(_episode(2, 0))


def test_append_mode_reopens_and_continues(store: Path) -> None:
    buf = ReplayBuffer.open(store, mode="a")
    buf.add_episode(_episode(2, 9), {"mode": 1, "seed": 109})
    again = ReplayBuffer.open(store)
    assert again.n_episodes == 4 and again.n_steps == 17
    with pytest.raises(ReplayBufferError, match="read-only"):
        again.add_episode(_episode(2, 9), {"mode": 1, "seed": 109})


def test_float64_is_stored_as_float32_and_ints_cast(tmp_path: Path) -> None:
    buf = ReplayBuffer.create(tmp_path / "f.zarr")
    ep = {"action": np.ones((3, 2)), "image": np.zeros((3, 2, 2, 3), np.uint8)}
    buf.add_episode(ep)
    assert buf["action"].dtype == np.float32
    buf.add_episode({"action": np.ones((2, 2), np.int64), "image": np.zeros((2, 2, 2, 3), np.int64)})
    assert buf.n_steps == 5 and buf["image"].dtype == np.uint8


def _dp_v2_group(root: zarr.Group) -> None:
    """Write Diffusion Policy's layout (zarr format 2, numcodecs Blosc) into ``root``."""
    data = root.require_group("data")
    img = data.create_array(
        "img", shape=(6, 4, 4, 3), chunks=(2, 4, 4, 3), dtype="uint8", compressors=numcodecs.Blosc("zstd", 5)
    )
    img[:] = np.arange(6 * 48, dtype=np.uint8).reshape(6, 4, 4, 3)
    data.create_array("action", shape=(6, 2), chunks=(6, 2), dtype="float32")[:] = np.arange(12).reshape(6, 2)
    root.require_group("meta").create_array("episode_ends", shape=(2,), dtype="int64")[:] = [2, 6]


def test_reads_diffusion_policy_v2_directory(tmp_path: Path) -> None:
    path = tmp_path / "pusht_cchi_v7_replay.zarr"
    _dp_v2_group(zarr.open_group(str(path), mode="w", zarr_format=2))
    assert (path / ".zgroup").exists()
    buf = ReplayBuffer.open(path)
    assert buf.n_episodes == 2 and buf.keys() == ["action", "img"]
    np.testing.assert_array_equal(buf.get_episode(1)["action"], np.arange(4, 12).reshape(4, 2))
    np.testing.assert_array_equal(buf["img"][5], np.arange(5 * 48, 6 * 48).reshape(4, 4, 3).astype(np.uint8))


def test_appends_to_diffusion_policy_v2_directory(tmp_path: Path) -> None:
    path = tmp_path / "dp.zarr"
    _dp_v2_group(zarr.open_group(str(path), mode="w", zarr_format=2))
    buf = ReplayBuffer.open(path, mode="a")
    ep = {"img": np.full((3, 4, 4, 3), 7, np.uint8), "action": np.ones((3, 2), np.float32)}
    buf.add_episode(ep, {"mode": 1})
    again = ReplayBuffer.open(path)
    np.testing.assert_array_equal(again.episode_ends, [2, 6, 9])
    np.testing.assert_array_equal(again.get_episode(2)["img"], ep["img"])
    assert again.episode_meta("mode")[-1] == 1
    assert (path / ".zgroup").exists() and not (path / "zarr.json").exists()  # still format 2


def test_reads_jpeg2000_images_of_diffusion_policy_image_stores(tmp_path: Path) -> None:
    from imagecodecs.numcodecs import Jpeg2k

    path = tmp_path / "image.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    frames = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None, None], (4, 1, 16, 3))
    root.require_group("data").create_array(
        "img", shape=frames.shape, chunks=(1, 16, 16, 3), dtype="uint8", compressors=Jpeg2k(level=50)
    )[:] = frames
    root.require_group("meta").create_array("episode_ends", shape=(1,), dtype="int64")[:] = [4]
    img = ReplayBuffer.open(path)["img"]
    assert img.shape == frames.shape and img.dtype == np.uint8
    assert np.abs(img.astype(int) - frames).max() <= 8  # JPEG 2000 at level 50 is near-lossless


def test_reads_diffusion_policy_zip(tmp_path: Path) -> None:
    path = tmp_path / "demo.zarr.zip"
    zs = zarr.storage.ZipStore(str(path), mode="w")
    _dp_v2_group(zarr.open_group(zs, mode="w", zarr_format=2))
    zs.close()
    assert zipfile.is_zipfile(path)
    with ReplayBuffer.open(path) as buf:
        assert buf.n_steps == 6
        np.testing.assert_array_equal(buf.episode_lengths, [2, 4])
        np.testing.assert_array_equal(buf["action"][:, 1], [1, 3, 5, 7, 9, 11])
    with pytest.raises(ReplayBufferError, match="read-only"):
        ReplayBuffer.open(path, mode="a")


# ---------------------------------------------------------------- bad input
def test_open_missing_path_and_non_store(tmp_path: Path) -> None:
    with pytest.raises(ReplayBufferError, match="no such store"):
        ReplayBuffer.open(tmp_path / "nope.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReplayBufferError, match="not a zarr store"):
        ReplayBuffer.open(tmp_path / "empty")
    (tmp_path / "junk.zarr.zip").write_bytes(b"not a zip")
    with pytest.raises(ReplayBufferError, match="not a zarr store"):
        ReplayBuffer.open(tmp_path / "junk.zarr.zip")


def test_missing_episode_ends(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root.require_group("data").create_array("action", shape=(3, 2), dtype="float32")
    root.require_group("meta")
    with pytest.raises(ReplayBufferError, match="meta/episode_ends"):
        ReplayBuffer.open(tmp_path / "s.zarr")


@pytest.mark.parametrize("ends", [[3, 2, 6], [2, 2, 6], [0, 6]])
def test_non_monotonic_episode_ends(tmp_path: Path, ends: list[int]) -> None:
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root.require_group("data").create_array("action", shape=(6, 2), dtype="float32")
    root.require_group("meta").create_array("episode_ends", shape=(len(ends),), dtype="int64")[:] = ends
    with pytest.raises(ReplayBufferError, match="not strictly increasing"):
        ReplayBuffer.open(tmp_path / "s.zarr")


@pytest.mark.parametrize("last_end", [5, 7])
def test_episode_ends_not_ending_at_n(tmp_path: Path, last_end: int) -> None:
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root.require_group("data").create_array("action", shape=(6, 2), dtype="float32")
    root.require_group("meta").create_array("episode_ends", shape=(2,), dtype="int64")[:] = [2, last_end]
    with pytest.raises(ReplayBufferError, match="data/action has 6 steps but meta/episode_ends ends at"):
        ReplayBuffer.open(tmp_path / "s.zarr")


def test_arrays_of_different_length(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    data = root.require_group("data")
    data.create_array("action", shape=(6, 2), dtype="float32")
    data.create_array("state", shape=(4, 3), dtype="float32")
    root.require_group("meta").create_array("episode_ends", shape=(1,), dtype="int64")[:] = [6]
    with pytest.raises(ReplayBufferError, match="data/state has 4 steps"):
        ReplayBuffer.open(tmp_path / "s.zarr")


def _snapshot(path: Path) -> dict[str, np.ndarray]:
    buf = ReplayBuffer.open(path)
    return {k: buf[k] for k in buf.keys()} | {"ends": buf.episode_ends}


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda e: e.pop("action"), r"missing \['action'\]"),
        (lambda e: e.update(extra=np.zeros((5, 1), np.float32)), r"extra \['extra'\]"),
        (lambda e: e.update(agent_pos=np.zeros((5, 3), np.float32)), "per-step shape"),
        (lambda e: e.update(image=np.zeros((5, 8, 8, 3), np.float32)), "cannot be cast safely"),
        (lambda e: e.update(image=np.full((5, 8, 8, 3), 300, np.int64)), "do not fit"),
        (lambda e: e["action"].__setitem__((2, 1), np.nan), "NaN/inf"),
        (lambda e: e["agent_pos"].__setitem__((4, 0), np.inf), "NaN/inf"),
        (lambda e: e.update(action=np.zeros((4, 2), np.float32)), "different length"),
    ],
)
def test_bad_episode_leaves_store_unchanged(store: Path, mutate, match: str) -> None:
    before = _snapshot(store)
    ep = _episode(5, 42)
    mutate(ep)
    buf = ReplayBuffer.open(store, mode="a")
    with pytest.raises(ReplayBufferError, match=match):
        buf.add_episode(ep, {"mode": 0, "seed": 1})
    after = _snapshot(store)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_empty_episode_and_empty_dict(tmp_path: Path) -> None:
    buf = ReplayBuffer.create(tmp_path / "s.zarr")
    with pytest.raises(ReplayBufferError, match="empty episode"):
        buf.add_episode({"action": np.zeros((0, 2), np.float32)})
    with pytest.raises(ReplayBufferError, match="empty dict"):
        buf.add_episode({})
    assert buf.n_episodes == 0 and buf.keys() == []


def test_exception_midway_rolls_back(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = ReplayBuffer.open(store, mode="a")
    real = buf._meta["episode_ends"].resize

    def fail(*args, **kwargs):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(buf._meta["episode_ends"], "resize", fail)
    with pytest.raises(KeyboardInterrupt):
        buf.add_episode(_episode(4, 9), {"mode": 1, "seed": 1})
    monkeypatch.setattr(buf._meta["episode_ends"], "resize", real)
    buf.close()
    again = ReplayBuffer.open(store)
    assert again.n_episodes == 3 and again["image"].shape[0] == 15
    assert ReplayBuffer.open(store, mode="a").n_steps == 15


def test_killed_append_hides_tail_and_next_writer_drops_it(store: Path) -> None:
    # Simulate a process killed after the data grew but before episode_ends was written.
    root = zarr.open_group(str(store), mode="r+")
    root.attrs.update({"appending": True})
    for key in ("image", "agent_pos", "action"):
        arr = root["data"][key]
        arr.resize((18, *arr.shape[1:]))
    reader = ReplayBuffer.open(store)
    assert reader.n_steps == 15 and reader["action"].shape == (15, 2)
    writer = ReplayBuffer.open(store, mode="a")
    writer.add_episode(_episode(2, 5), {"mode": 0, "seed": 7})
    final = ReplayBuffer.open(store)
    np.testing.assert_array_equal(final.episode_ends, [5, 12, 15, 17])
    np.testing.assert_array_equal(final.get_episode(3)["action"], _episode(2, 5)["action"])


def test_create_refuses_existing_and_zip(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ReplayBufferError, match="already exists"):
        ReplayBuffer.create(store)
    assert ReplayBuffer.open(store).n_episodes == 3
    fresh = ReplayBuffer.create(store, overwrite=True)
    assert fresh.n_episodes == 0
    with pytest.raises(ReplayBufferError, match="read-only"):
        ReplayBuffer.create(tmp_path / "x.zarr.zip")


def test_unknown_key_errors(store: Path) -> None:
    buf = ReplayBuffer.open(store)
    with pytest.raises(KeyError, match="no key 'pixels'"):
        buf["pixels"]
    with pytest.raises(KeyError, match="no meta key"):
        buf.episode_meta("nope")
    with pytest.raises(IndexError):
        buf.get_episode(3)


# ---------------------------------------------------------------- concurrency
ROOT = Path(__file__).resolve().parents[1]
CREATE_MANY = """
import sys, time
import numpy as np
from data.replay_buffer import ReplayBuffer, StoreExistsError
base, start, tag = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
while time.time() < start:
    pass
won = []
for i in range(int(sys.argv[4])):
    try:
        buf = ReplayBuffer.create(f"{base}/s{i}.zarr")
    except StoreExistsError:
        continue
    buf.add_episode({"action": np.full((3, 2), tag, np.float32)}, {"tag": tag})
    buf.close()
    won.append(i)
print(" ".join(map(str, won)))
"""
APPEND_MANY = """
import sys
import numpy as np
from data.replay_buffer import ReplayBuffer
buf = ReplayBuffer.create(sys.argv[1], chunk_bytes=256)
print("created", flush=True)
for i in range(int(sys.argv[2])):
    rng = np.random.default_rng(i)
    t = 2 + i % 5
    buf.add_episode({"image": rng.integers(0, 256, (t, 4, 4, 3), dtype=np.uint8),
                     "action": rng.normal(size=(t, 2)).astype(np.float32)}, {"seed": i})
buf.close()
"""


def _child(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_creators_never_delete_each_others_store(tmp_path: Path) -> None:
    n = 25
    start = time.time() + 1.5  # both children start creating at the same moment
    children = [_child(CREATE_MANY, tmp_path, start, tag, n) for tag in (1, 2)]
    outs = [child.communicate(timeout=120) for child in children]
    assert all(c.returncode == 0 for c in children), [err[-1500:] for _, err in outs]
    won = [{int(i) for i in out.split()} for out, _ in outs]
    assert won[0] | won[1] == set(range(n)) and not won[0] & won[1]  # each path created exactly once
    for tag, indices in zip((1, 2), won):
        for i in indices:
            buf = ReplayBuffer.open(tmp_path / f"s{i}.zarr")
            assert buf.n_episodes == 1 and buf.episode_meta("tag").tolist() == [tag]  # the winner's store survived
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"s{i}.zarr" for i in range(n))  # no temp dirs


def test_reader_polling_during_an_append_never_reports_a_healthy_store_as_corrupt(tmp_path: Path) -> None:
    path, n = tmp_path / "s.zarr", 120
    writer = _child(APPEND_MANY, path, n)
    assert writer.stdout.readline().strip() == "created"
    opens, errors, deadline = 0, [], time.monotonic() + 120
    while writer.poll() is None and time.monotonic() < deadline:
        try:
            buf = ReplayBuffer.open(path)
        except ReplayBufferError as exc:
            errors.append(str(exc))
            continue
        opens += 1
        if buf.n_episodes:  # the newest committed episode is complete and matches its seed
            i = buf.n_episodes - 1
            rng = np.random.default_rng(i)
            t = 2 + i % 5
            np.testing.assert_array_equal(buf.get_episode(i)["image"], rng.integers(0, 256, (t, 4, 4, 3), np.uint8))
            assert buf.episode_meta("seed")[i] == i
    assert writer.wait(timeout=60) == 0, writer.stderr.read()[-1500:]
    assert opens > 10 and errors == []
    assert ReplayBuffer.open(path).n_episodes == n


def test_a_second_writer_fails_naming_the_holder_or_waits_for_it(store: Path) -> None:
    writer = ReplayBuffer.open(store, mode="a")
    with pytest.raises(StoreLockedError, match=rf"is being written by PID {os.getpid()} \(this process"):
        ReplayBuffer.open(store, mode="a")
    with pytest.raises(StoreLockedError, match="after waiting 0.2 s"):
        ReplayBuffer.open(store, mode="a", lock_timeout=0.2)
    with pytest.raises(StoreLockedError, match="being written"):
        ReplayBuffer.open(store, wait_for_writer=0.2)  # a reader may wait for the writer to finish
    assert ReplayBuffer.open(store).n_episodes == 3  # readers do not wait by default
    writer.add_episode(_episode(2, 9), {"mode": 0, "seed": 9})
    writer.close()
    with pytest.raises(ReplayBufferError, match="read-only"):
        writer.add_episode(_episode(2, 9), {"mode": 0, "seed": 9})
    again = ReplayBuffer.open(store, mode="a")  # the lock went with close()
    assert again.n_episodes == 4


# ---------------------------------------------------------------- damage
def _chunk(path: Path, name: str) -> Path:
    """The first chunk file of array ``name`` (data/<key> or meta/<key>)."""
    return sorted(p for p in (path / name / "c").rglob("*") if p.is_file())[0]


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))


DAMAGE = {
    "deleted": lambda f: f.unlink(),
    "truncated": lambda f: f.write_bytes(f.read_bytes()[:-7]),
    "garbage": lambda f: f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size)),
    "flipped": _flip,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["data/image", "data/agent_pos", "data/action", "meta/episode_ends", "meta/seed"])
def test_a_damaged_chunk_in_any_array_is_named_never_read_as_data(
    store: Path, tmp_path: Path, name: str, damage: str
) -> None:
    from data.verify import main as verify

    assert verify([str(store)]) == 0
    DAMAGE[damage](_chunk(store, name))
    with pytest.raises(ReplayBufferError) as caught:
        ReplayBuffer.open(store, in_memory=True)  # what train.py does
    message = str(caught.value)
    assert message.startswith(f"{store}: {name} chunk c/0") and "\n" not in message
    assert ("is missing" if damage == "deleted" else "is damaged") in message
    assert f"python -m data.verify {store}" in message
    assert verify([str(store)]) == 1


def test_garbage_and_missing_metadata_name_store_and_key(store: Path) -> None:
    (store / "data" / "action" / "zarr.json").write_text("{not json")
    with pytest.raises(ReplayBufferError, match=r"data/action has unreadable array metadata \(JSONDecodeError"):
        ReplayBuffer.open(store)
    (store / "data" / "action" / "zarr.json").unlink()  # the key must not silently vanish
    with pytest.raises(ReplayBufferError, match=r"data/action has no array metadata \(zarr.json or .zarray is missing"):
        ReplayBuffer.open(store)
    (store / "zarr.json").write_bytes(b"\x00\xff")
    with pytest.raises(ReplayBufferError, match=rf"{store}: zarr.json is not valid JSON"):
        ReplayBuffer.open(store)


def test_stores_without_checksums_still_open_and_verify(tmp_path: Path, capsys) -> None:
    from data.verify import main as verify

    path = tmp_path / "dp.zarr"
    _dp_v2_group(zarr.open_group(str(path), mode="w", zarr_format=2))
    assert verify([str(path)]) == 0
    assert "no checksums in data/action, data/img, meta/episode_ends" in capsys.readouterr().out
    (path / "data" / "img" / "1.0.0.0").write_bytes(b"garbage!")  # a decoding failure still shows
    with pytest.raises(ReplayBufferError, match=r"data/img chunk 1.0.0.0 is damaged"):
        ReplayBuffer.open(path)["img"]


def test_meta_values_are_cast_losslessly(store: Path) -> None:
    buf = ReplayBuffer.open(store, mode="a")
    for bad in (1.7, "seven"):
        with pytest.raises(ReplayBufferError, match="meta 'seed' dtype .* cannot be cast safely to the store's dtype"):
            buf.add_episode(_episode(2, 0), {"mode": 0, "seed": bad})
    with pytest.raises(ReplayBufferError, match="meta 'mode' dtype object cannot be cast"):
        buf.add_episode(_episode(2, 0), {"mode": 2**70, "seed": 1})
    buf.add_episode(_episode(2, 0), {"mode": True, "seed": np.int16(5)})  # bool and narrower ints are lossless
    assert buf.episode_meta("seed").tolist() == [100, 101, 102, 5] and buf.n_episodes == 4


def test_overwrite_replaces_only_stores(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ReplayBufferError, match="exists and is not a zarr store; refusing to replace it"):
        ReplayBuffer.create(other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    writer = ReplayBuffer.open(store, mode="a")
    with pytest.raises(StoreLockedError):  # never replaced under a running writer
        ReplayBuffer.create(store, overwrite=True)
    writer.close()
    assert ReplayBuffer.create(store, overwrite=True).n_episodes == 0
