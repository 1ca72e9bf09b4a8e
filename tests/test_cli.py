"""Tests for data/cli.py (``actchunk-data``): one command over the formats, chosen by --format or by the paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.cli import main
from data.replay_buffer import ReplayBuffer


def _store(path: Path) -> Path:
    buf = ReplayBuffer.create(path, attrs={"task": "push_t", "fps": 10})
    rng = np.random.default_rng(0)
    for t in (5, 7):
        buf.add_episode(
            {
                "agent_pos": rng.normal(size=(t, 2)).astype(np.float32),
                "action": rng.normal(size=(t, 2)).astype(np.float32),
            }
        )
    buf.close()
    return path


def test_export_and_import_pick_the_format_from_the_paths_or_format(tmp_path, capsys):
    store = _store(tmp_path / "s.zarr")
    assert main(["export", str(store), str(tmp_path / "demo.hdf5")]) == 0  # .hdf5: robomimic
    assert main(["export", str(store), str(tmp_path / "lr"), "--fps", "10"]) == 0  # a directory: LeRobot
    assert json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["total_frames"] == 12
    assert main(["import", str(tmp_path / "demo.hdf5"), str(tmp_path / "a.zarr")]) == 0
    assert main(["import", str(tmp_path / "lr"), str(tmp_path / "b.zarr"), "--format=lerobot"]) == 0
    np.testing.assert_array_equal(ReplayBuffer.open(tmp_path / "a.zarr")["action"], ReplayBuffer.open(store)["action"])
    np.testing.assert_array_equal(
        ReplayBuffer.open(tmp_path / "b.zarr")["agent_pos"], ReplayBuffer.open(store)["agent_pos"]
    )
    assert main(["import", str(tmp_path / "lr"), str(tmp_path / "c.zarr"), "--format", "robomimic"]) == 2
    assert "no such hdf5 file" in capsys.readouterr().err and not (tmp_path / "c.zarr").exists()


def test_verify_and_bad_commands(tmp_path, capsys):
    store = _store(tmp_path / "s.zarr")
    assert main(["verify", str(store)]) == 0 and "ok:" in capsys.readouterr().out
    assert main(["convert", str(store)]) == 2 and "choose import, export or verify" in capsys.readouterr().err
    assert main(["import", str(store), str(tmp_path / "x.zarr"), "--format", "rlds"]) == 2
    assert "unknown --format 'rlds'" in capsys.readouterr().err
    assert main([]) == 2 and "actchunk-data import" in capsys.readouterr().out
