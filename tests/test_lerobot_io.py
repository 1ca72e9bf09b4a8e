"""Tests for data/lerobot_io.py (lerobot_read, lerobot_write, lerobot_format) against LeRobot 0.4.4's own code.

LeRobot's writer builds a dataset (two video keys, two tasks, many episodes per file and many files per
chunk), we import it; we export a store, LeRobot's ``LeRobotDataset`` reads it. LeRobot runs in
.venv-lerobot (tests/lerobot_env.py), called as a subprocess (tests/lerobot_side.py).

Video is lossy (yuv420p, crf 30): frames are compared with a tolerance. Our decoder and LeRobot's
(torchcodec) decode the same file to within 2 grey levels (mean under 0.5); a decoded frame differs from
the frame that was encoded by a mean of at most 3 grey levels on these smooth 64 px test images (AV1: 2.2,
H.264: 2.9). Everything else
(states, actions, tasks, episode boundaries, fps) must match exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from configs import compose_config
from data.lerobot_format import default_export_name, default_import_name
from data.lerobot_io import main
from data.lerobot_read import import_lerobot
from data.lerobot_write import export_lerobot
from data.replay_buffer import ReplayBuffer
from data.video_io import VideoWriter, resize_rgb
from lerobot_env import lerobot_python
from train import run as train

SIDE = Path(__file__).with_name("lerobot_side.py")
LENGTHS = [12, 9, 15, 11, 10, 13]
TASKS = ["pick the cube", "push the block"]
SAME_DECODE_MAX, SAME_DECODE_MEAN = 2, 0.5  # our decode vs LeRobot's of one file
LOSSY_MEAN = 3.0  # decoded vs encoded frames


def _frames(n: int, seed: int, size: int = 64) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth images that move from frame to frame."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.arange(n)[:, None, None] / 10 + seed
    red = 0.5 + 0.4 * np.sin(np.pi * (xx + 2 * t))
    green = 0.5 + 0.4 * np.cos(np.pi * (yy - t))
    blue = 0.5 + 0.3 * np.sin(np.pi * (xx + yy + 2 * t / 3))
    return np.round(np.stack([red, green, blue], -1) * 255).astype(np.uint8)


def _episodes() -> list[dict[str, np.ndarray]]:
    """Six episodes of images, a 4-d state and a 2-d action, distinct in every frame."""
    out = []
    for e, n in enumerate(LENGTHS):
        steps = np.arange(n, dtype=np.float32)
        out.append(
            {
                "image": _frames(n, e),
                "wrist_image": _frames(n, 10 + e)[:, ::-1],
                "agent_pos": np.stack([steps + 100 * e, -steps, steps / 7, np.full(n, e)], -1).astype(np.float32),
                "action": np.stack([steps * 0.5 + e, steps - e], -1).astype(np.float32),
            }
        )
    return out


def _run_lerobot(*args: str) -> None:
    python, env = lerobot_python()
    done = subprocess.run([str(python), str(SIDE), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _read_with_lerobot(root: Path, tmp: Path) -> dict[str, np.ndarray]:
    out = tmp / f"{root.name}_read.npz"
    _run_lerobot("read", str(root), str(out))
    return dict(np.load(out))


def _assert_close_frames(got: np.ndarray, want: np.ndarray, max_diff: float | None, mean_diff: float) -> None:
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.mean() <= mean_diff, diff.mean()
    if max_diff is not None:
        assert diff.max() <= max_diff, diff.max()


def _write_with_lerobot(tmp: Path, image_dtype: str) -> Path:
    """A dataset written by LeRobot's own LeRobotDataset.create / add_frame / save_episode / finalize."""
    eps = _episodes()
    arrays = {
        "observation.image": np.concatenate([e["image"] for e in eps]),
        "observation.images.wrist": np.concatenate([e["wrist_image"] for e in eps]),
        "observation.state": np.concatenate([e["agent_pos"] for e in eps]),
        "action": np.concatenate([e["action"] for e in eps]),
    }
    tasks = np.array([TASKS[i % 2] for i in range(len(LENGTHS))])
    np.savez(tmp / "episodes.npz", fps=10, lengths=np.array(LENGTHS), tasks=tasks, **arrays)
    _run_lerobot("write", str(tmp / "episodes.npz"), str(tmp / image_dtype), image_dtype)
    return tmp / image_dtype


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return _write_with_lerobot(tmp_path_factory.mktemp("lerobot"), "video")


@pytest.fixture(scope="module")
def written_read(written, tmp_path_factory) -> dict[str, np.ndarray]:
    return _read_with_lerobot(written, tmp_path_factory.mktemp("read"))


def test_lerobots_writer_made_many_episodes_per_file_and_many_files_per_chunk(written):
    episodes = pq.read_table(next((written / "meta" / "episodes").glob("*/*.parquet"))).to_pylist()
    for kind in ("data", "videos/observation.image"):
        files = [(ep[f"{kind}/chunk_index"], ep[f"{kind}/file_index"]) for ep in episodes]
        assert max(files.count(f) for f in files) >= 2, (kind, files)  # some file holds several episodes
        chunks = [c for c, _ in set(files)]
        assert max(chunks.count(c) for c in chunks) >= 2 and len(set(chunks)) >= 2, (kind, files)


def test_import_matches_lerobots_reader_and_the_recorded_episodes(written, written_read, tmp_path):
    buf = import_lerobot(written, tmp_path / "in.zarr", progress=False)
    assert sorted(buf.keys()) == ["action", "agent_pos", "image", "wrist_image"]
    np.testing.assert_array_equal(buf.episode_lengths, LENGTHS)
    assert buf.episode_meta("instruction").tolist() == [TASKS[i % 2] for i in range(len(LENGTHS))]
    assert buf.attrs["fps"] == 10 and buf.attrs["lerobot_keys"]["wrist_image"] == "observation.images.wrist"
    np.testing.assert_array_equal(buf["agent_pos"], written_read["observation.state"])
    np.testing.assert_array_equal(buf["action"], written_read["action"])
    assert buf.episode_meta("instruction")[written_read["episode_index"]].tolist() == written_read["tasks"].tolist()
    for ours, theirs in (("image", "observation.image"), ("wrist_image", "observation.images.wrist")):
        _assert_close_frames(buf[ours], written_read[theirs], SAME_DECODE_MAX, SAME_DECODE_MEAN)
    for e, ep in enumerate(_episodes()):
        got = buf.get_episode(e)
        np.testing.assert_array_equal(got["agent_pos"], ep["agent_pos"])
        np.testing.assert_array_equal(got["action"], ep["action"])
        _assert_close_frames(got["image"], ep["image"], None, LOSSY_MEAN)
        _assert_close_frames(got["wrist_image"], ep["wrist_image"], None, LOSSY_MEAN)


def test_import_key_map_state_key_and_resize(written, tmp_path):
    full = import_lerobot(written, tmp_path / "full.zarr", progress=False)
    small = import_lerobot(
        written,
        tmp_path / "small.zarr",
        key_map={"observation.images.wrist": "", "observation.image": "top_image"},
        state_key="state",
        image_size=(16, 24),
        progress=False,
    )
    assert sorted(small.keys()) == ["action", "state", "top_image"]
    assert small["top_image"].shape[1:] == (16, 24, 3)
    resized = np.stack([resize_rgb(f, (16, 24)) for f in full["image"]])
    _assert_close_frames(small["top_image"], resized, None, LOSSY_MEAN)  # resized in YUV vs after conversion to RGB
    np.testing.assert_array_equal(small["state"], full["agent_pos"])


def test_import_of_image_features_is_lossless(tmp_path):
    written = _write_with_lerobot(tmp_path, "image")  # PNG bytes in the parquet instead of mp4 files
    assert not (written / "videos").exists()
    buf = import_lerobot(written, tmp_path / "png.zarr", progress=False)
    for e, ep in enumerate(_episodes()):
        np.testing.assert_array_equal(buf.get_episode(e)["image"], ep["image"])
        np.testing.assert_array_equal(buf.get_episode(e)["wrist_image"], ep["wrist_image"])
    assert buf.episode_meta("instruction").tolist() == [TASKS[i % 2] for i in range(len(LENGTHS))]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ours") / "ours.zarr"
    buf = ReplayBuffer.create(path, attrs={"task": "push_t", "fps": 10})
    for i, ep in enumerate(_episodes()):
        buf.add_episode(ep, {"instruction": TASKS[i % 2], "seed": i})
    buf.close()
    return path


@pytest.mark.parametrize("vcodec", ["libsvtav1", "h264"])
def test_export_is_read_by_lerobot_and_imports_back(store, tmp_path, vcodec):
    out = export_lerobot(
        store,
        tmp_path / "exported",
        vcodec=vcodec,
        chunks_size=2,
        data_file_mb=0.002,
        video_file_mb=0.01,
        progress=False,
    )
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["observation.image"]["info"]["video.codec"] == {"libsvtav1": "av1", "h264": "h264"}[vcodec]
    assert info["features"]["observation.state"]["names"] == [f"agent_pos_{i}" for i in range(4)]
    assert len(list((out / "data").glob("chunk-*/file-*.parquet"))) >= 3
    read = _read_with_lerobot(out, tmp_path)
    eps = _episodes()
    assert int(read["fps"]) == 10 and len(read["index"]) == sum(LENGTHS)
    np.testing.assert_array_equal(read["episode_index"], np.repeat(np.arange(len(LENGTHS)), LENGTHS))
    np.testing.assert_array_equal(read["frame_index"], np.concatenate([np.arange(n) for n in LENGTHS]))
    assert read["tasks"].tolist() == [TASKS[e % 2] for e in read["episode_index"]]
    np.testing.assert_array_equal(read["observation.state"], np.concatenate([e["agent_pos"] for e in eps]))
    np.testing.assert_array_equal(read["action"], np.concatenate([e["action"] for e in eps]))
    for ours, theirs in (("image", "observation.image"), ("wrist_image", "observation.images.wrist")):
        _assert_close_frames(read[theirs], np.concatenate([e[ours] for e in eps]), None, LOSSY_MEAN)
    stats = json.loads((out / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["mean"], read["action"].mean(0), rtol=1e-6)
    assert np.asarray(stats["observation.image"]["mean"]).shape == (3, 1, 1)
    back = import_lerobot(out, tmp_path / "back.zarr", progress=False)
    assert back.episode_meta("instruction").tolist() == [TASKS[i % 2] for i in range(len(LENGTHS))]
    np.testing.assert_array_equal(back["agent_pos"], read["observation.state"])
    _assert_close_frames(back["image"], read["observation.image"], SAME_DECODE_MAX, SAME_DECODE_MEAN)


def test_default_names_round_trip():
    ours = ["image", "top_image", "agent_pos", "state", "action", "reward", "cube_pose"]
    theirs = [default_export_name(k, ours) for k in ours]
    assert theirs == [
        "observation.image",
        "observation.images.top",
        "observation.state",
        "observation.environment_state",
        "action",
        "next.reward",
        "observation.cube_pose",
    ]
    assert [default_import_name(k, "agent_pos") for k in theirs] == ours
    assert default_export_name("state", ["state", "action"]) == "observation.state"
    assert default_import_name("observation.state", "state") == "state"


def _leaves_nothing(tmp: Path, name: str) -> bool:
    return not any(p.name.startswith((name, f".{name}")) for p in tmp.iterdir())


def test_bad_input_is_one_line_and_writes_nothing(written, tmp_path, capsys):
    def refused(src: Path, expected: str) -> None:
        assert main(["import", str(src), str(tmp_path / "out.zarr")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # the lines before: the progress bar
        assert err.startswith("error: ") and expected in err, err
        assert _leaves_nothing(tmp_path, "out.zarr")

    old = tmp_path / "old"
    shutil.copytree(written, old)
    info = json.loads((old / "meta" / "info.json").read_text())
    (old / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    refused(old, "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=local/old --root=")

    odd = tmp_path / "odd"
    shutil.copytree(written, odd)
    info["features"]["observation.state"]["dtype"] = "complex64"
    (odd / "meta" / "info.json").write_text(json.dumps(info))
    refused(odd, "feature 'observation.state' has dtype 'complex64'")

    missing = tmp_path / "missing"
    shutil.copytree(written, missing)
    (missing / "videos" / "observation.images.wrist" / "chunk-000" / "file-001.mp4").unlink()
    refused(missing, "video file videos/observation.images.wrist/chunk-000/file-001.mp4 is missing")

    short = tmp_path / "short"
    shutil.copytree(written, short)
    video = short / "videos" / "observation.image" / "chunk-000" / "file-000.mp4"
    video.unlink()
    writer = VideoWriter(video, 10)
    writer.write(_frames(LENGTHS[0] - 2, 0))
    writer.close()
    refused(short, "no frame at 1.0000 s (the file ends before it)")

    assert main(["import", str(written), str(tmp_path / "out.zarr"), "--map", "action="]) == 2
    assert "no feature becomes 'action'" in capsys.readouterr().err


def test_export_refuses_what_lerobot_cannot_hold_and_never_replaces_other_things(store, tmp_path, capsys):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("mine")
    assert main(["export", str(store), str(keep), "--overwrite"]) == 2
    assert "is not a LeRobot dataset directory" in capsys.readouterr().err and (keep / "mine.txt").exists()
    assert main(["export", str(store), str(tmp_path / "x"), "--map", "agent_pos=index"]) == 2
    assert "LeRobot's own columns" in capsys.readouterr().err and _leaves_nothing(tmp_path, "x")
    nofps = tmp_path / "nofps.zarr"
    buf = ReplayBuffer.create(nofps)
    buf.add_episode({"action": np.zeros((3, 2), np.float32)})
    buf.close()
    assert main(["export", str(nofps), str(tmp_path / "y")]) == 2
    assert "no integer fps attribute" in capsys.readouterr().err
    assert main(["export", str(nofps), str(tmp_path / "y"), "--fps", "5"]) == 0
    assert json.loads((tmp_path / "y" / "meta" / "info.json").read_text())["video_path"] is None


def test_an_imported_dataset_trains(written, tmp_path):
    store = tmp_path / "demo.zarr"
    import_lerobot(written, store, key_map={"observation.images.wrist": ""}, image_size=(32, 32), progress=False)
    cfg = compose_config(
        "train",
        [
            "task=pick_place_top",
            f"task.dataset_path={store}",
            "task.env_kwargs.image_size=32",
            "task.shape_meta.action.shape=[2]",
            "policy.encoder.crop_shape=[28,28]",
            "policy.encoder.feature_dim=8",
            "policy.denoiser.down_dims=[16,32]",
            "policy.denoiser.diffusion_step_embed_dim=16",
            "policy.horizon=8",
            "policy.n_action_steps=4",
            "training.batch_size=8",
            "training.max_steps=3",
            "training.warmup_steps=1",
            "training.val_every=3",
            "training.checkpoint_every=3",
            f"output_root={tmp_path}",
            "name=imported",
        ],
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["step"] == 3 and (tmp_path / "run" / "checkpoints" / "latest.ckpt").is_file()
