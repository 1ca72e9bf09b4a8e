"""Tests for data/robomimic_io.py: import of a robomimic-layout hdf5, export read by robomimic itself."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from data.replay_buffer import ReplayBuffer
from data.robomimic_io import RobomimicFormatError, export_hdf5, import_hdf5, main


def _write_robomimic(path: Path, lengths: dict[int, int]) -> None:
    """A robomimic-format file with demos numbered as given (deliberately out of order)."""
    with h5py.File(path, "w") as f:
        for num, t in lengths.items():
            g = f.create_group(f"data/demo_{num}")
            g.attrs["num_samples"] = t
            g.create_dataset("actions", data=np.full((t, 7), num, np.float64))
            g.create_dataset("obs/robot0_eef_pos", data=np.full((t, 3), num, np.float64))
            g.create_dataset("obs/robot0_gripper_qpos", data=np.full((t, 2), -num, np.float64))
            g.create_dataset("obs/agentview_image", data=np.full((t, 8, 8, 3), num, np.uint8))
        f["data"].attrs["env_args"] = '{"env_name": "Lift"}'
        f.create_dataset("mask/train", data=np.array([b"demo_10", b"demo_2"]))
        f.create_dataset("mask/valid", data=np.array([b"demo_1"]))


@pytest.fixture
def hdf5(tmp_path: Path) -> Path:
    path = tmp_path / "demo.hdf5"
    _write_robomimic(path, {10: 4, 1: 3, 2: 5})
    return path


def test_import_numeric_order_key_map_and_masks(hdf5: Path, tmp_path: Path) -> None:
    buf = import_hdf5(
        hdf5,
        tmp_path / "out.zarr",
        key_map={"image": "agentview_image", "agent_pos": ["robot0_eef_pos", "robot0_gripper_qpos"]},
    )
    assert buf.keys() == ["action", "agent_pos", "image"]
    np.testing.assert_array_equal(buf.episode_meta("robomimic_demo"), [1, 2, 10])
    np.testing.assert_array_equal(buf.episode_lengths, [3, 5, 4])
    np.testing.assert_array_equal(buf.get_episode(2)["agent_pos"][0], [10, 10, 10, -10, -10])
    assert buf["action"].dtype == np.float32 and buf["image"].dtype == np.uint8
    np.testing.assert_array_equal(buf.episode_meta("mask_train"), [False, True, True])
    np.testing.assert_array_equal(buf.episode_meta("mask_valid"), [True, False, False])


def test_import_filter_key(hdf5: Path, tmp_path: Path) -> None:
    buf = import_hdf5(hdf5, tmp_path / "train.zarr", filter_key="train")
    np.testing.assert_array_equal(buf.episode_meta("robomimic_demo"), [2, 10])
    assert set(buf.keys()) == {"action", "robot0_eef_pos", "robot0_gripper_qpos", "agentview_image"}
    with pytest.raises(RobomimicFormatError, match="no filter key mask/test"):
        import_hdf5(hdf5, tmp_path / "x.zarr", filter_key="test")


def test_import_bad_input_leaves_nothing(hdf5: Path, tmp_path: Path) -> None:
    with pytest.raises(RobomimicFormatError, match="no key 'wrist'"):
        import_hdf5(hdf5, tmp_path / "bad.zarr", key_map={"image": "wrist"})
    assert not any(p.name.startswith((".bad", "bad")) for p in tmp_path.iterdir())
    not_h5 = tmp_path / "x.hdf5"
    not_h5.write_text("nope")
    with pytest.raises(RobomimicFormatError, match="not an hdf5"):
        import_hdf5(not_h5, tmp_path / "y.zarr")
    (tmp_path / "z.zarr").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        import_hdf5(hdf5, tmp_path / "z.zarr")


def test_overwrite_never_deletes_the_input_or_what_is_not_a_store(hdf5: Path, tmp_path: Path, capsys) -> None:
    before = hdf5.read_bytes()
    assert main(["import", str(hdf5), str(hdf5), "--overwrite"]) == 2
    assert f"{hdf5} is the input; choose another output path" in capsys.readouterr().err
    assert hdf5.read_bytes() == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    assert main(["import", str(hdf5), str(notes), "--overwrite"]) == 2
    assert "exists and is not a zarr store; refusing to replace it" in capsys.readouterr().err
    assert (notes / "keep.txt").read_text() == "mine"
    store = tmp_path / "s.zarr"
    import_hdf5(hdf5, store)
    import_hdf5(hdf5, store, filter_key="train", overwrite=True)  # a store is replaced
    assert ReplayBuffer.open(store).n_episodes == 2
    assert main(["export", str(store), str(store), "--overwrite"]) == 2
    assert main(["export", str(store), str(notes / "keep.txt"), "--overwrite"]) == 2
    assert "exists and is not an hdf5 file" in capsys.readouterr().err and ReplayBuffer.open(store).n_episodes == 2


def test_export_is_read_by_robomimic_sequence_dataset(tmp_path: Path) -> None:
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    buf = ReplayBuffer.create(tmp_path / "ours.zarr", attrs={"task": "push_t"})
    rng = np.random.default_rng(0)
    episodes = []
    for t in (6, 9, 7):
        ep = {
            "image": rng.integers(0, 256, (t, 8, 8, 3), dtype=np.uint8),
            "agent_pos": rng.normal(size=(t, 2)).astype(np.float32),
            "action": rng.normal(size=(t, 2)).astype(np.float32),
        }
        buf.add_episode(ep)
        episodes.append(ep)
    out = export_hdf5(tmp_path / "ours.zarr", tmp_path / "ours.hdf5", val_ratio=0.34, seed=0)

    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["agent_pos"], "rgb": ["image"]}})
    ds = SequenceDataset(
        hdf5_path=str(out),
        obs_keys=("agent_pos", "image"),
        dataset_keys=("actions",),
        seq_length=4,
        frame_stack=1,
        hdf5_cache_mode=None,
        load_next_obs=True,
    )
    assert ds.n_demos == 3 and len(ds) == 6 + 9 + 7
    item = ds[6]  # first window of demo_1
    np.testing.assert_allclose(item["actions"], episodes[1]["action"][:4], rtol=1e-6)
    np.testing.assert_allclose(item["obs"]["agent_pos"][:, :], episodes[1]["agent_pos"][:4], rtol=1e-6)
    np.testing.assert_array_equal(item["obs"]["image"], episodes[1]["image"][:4])
    np.testing.assert_allclose(item["next_obs"]["agent_pos"][:3], episodes[1]["agent_pos"][1:4], rtol=1e-6)
    last = ds[6 + 8]  # last step of demo_1: the window is padded with its final frame
    np.testing.assert_allclose(last["actions"], np.repeat(episodes[1]["action"][-1:], 4, axis=0), rtol=1e-6)
    train = SequenceDataset(
        hdf5_path=str(out),
        obs_keys=("agent_pos",),
        dataset_keys=("actions",),
        filter_by_attribute="train",
        load_next_obs=False,
    )
    valid = SequenceDataset(
        hdf5_path=str(out),
        obs_keys=("agent_pos",),
        dataset_keys=("actions",),
        filter_by_attribute="valid",
        load_next_obs=False,
    )
    assert train.n_demos + valid.n_demos == 3 and set(train.demos).isdisjoint(valid.demos)
    # And back again: import of our own export reproduces the episodes.
    back = import_hdf5(out, tmp_path / "back.zarr", key_map={"image": "image", "agent_pos": "agent_pos"})
    for i, ep in enumerate(episodes):
        for k, v in ep.items():
            np.testing.assert_array_equal(back.get_episode(i)[k], v)


def test_cli_round_trip_and_error(hdf5: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["import", str(hdf5), str(tmp_path / "c.zarr"), "--key", "image=agentview_image"]) == 0
    assert "3 episodes" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "c.zarr"), str(tmp_path / "c.hdf5")]) == 0
    assert main(["import", str(hdf5), str(tmp_path / "c.zarr")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_instructions_round_trip_through_ep_meta_lang(tmp_path: Path) -> None:
    buf = ReplayBuffer.create(tmp_path / "ours.zarr", attrs={"task": "pick_place"})
    texts = ["put the cube in the left bin", "put the cube in the right bin"]
    for text in texts:
        buf.add_episode(
            {"agent_pos": np.zeros((4, 2), np.float32), "action": np.zeros((4, 2), np.float32)}, {"instruction": text}
        )
    buf.close()
    out = export_hdf5(tmp_path / "ours.zarr", tmp_path / "ours.hdf5")
    with h5py.File(out, "r") as f:
        assert json.loads(f["data/demo_1"].attrs["ep_meta"]) == {"lang": texts[1]}
    back = import_hdf5(out, tmp_path / "back.zarr")
    assert [str(t) for t in back.episode_meta("instruction")] == texts
    with h5py.File(out, "a") as f:
        del f["data/demo_1"].attrs["ep_meta"]
    with pytest.raises(RobomimicFormatError, match="data/demo_1 has no ep_meta 'lang'"):
        import_hdf5(out, tmp_path / "partial.zarr")
