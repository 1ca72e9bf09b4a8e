"""Tests for data.collect: stored layout, both modes, resume after an interrupt, append, parallel workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from configs import compose_config
from data.collect import EpisodeRunner, collect, format_summary
from data.replay_buffer import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]


def task_cfg(name: str = "push_around", image_size: int = 32) -> dict:
    """A task config as train.py would pass it (resolved), with small images for speed."""
    cfg = compose_config("train", [f"task={name}", f"task.env_kwargs.image_size={image_size}"])
    return OmegaConf.to_container(cfg.task, resolve=True)


def test_collect_stores_successful_episodes_with_both_modes(tmp_path):
    out = tmp_path / "demo.zarr"
    summary = collect(task_cfg(), 6, out, seed=0, progress=False)
    buffer = ReplayBuffer.open(out)
    assert buffer.n_episodes == 6 and summary["episodes"] == 6 and summary["complete"]
    assert sorted(buffer.keys()) == ["action", "agent_pos", "image", "state"]
    assert buffer["image"].shape[1:] == (32, 32, 3) and buffer["image"].dtype == np.uint8
    assert buffer["action"].dtype == np.float32 and np.abs(buffer["action"]).max() <= 0.25
    assert buffer.attrs["task"] == "push_around" and buffer.attrs["mode_names"] == ["left", "right"]
    assert buffer.attrs["obs_keys"] == ["agent_pos", "image", "state"] and buffer.attrs["fps"] == 10
    assert set(buffer.episode_meta("mode").tolist()) == {0, 1}  # both modes in the data
    assert buffer.episode_meta("success").all()
    assert sum(summary["mode_counts"].values()) == 6
    np.testing.assert_array_equal(buffer.episode_meta("seed"), np.arange(6))
    runner = EpisodeRunner("actchunk/PushAround-v0", {"image_size": 32}, 100, None)
    replay = runner.run(3)  # an episode is reproducible from its seed alone
    runner.close()
    for key, value in replay["data"].items():
        np.testing.assert_array_equal(value, buffer.get_episode(3)[key])
    assert "expert success" in format_summary(summary)


def test_resume_after_interrupt_neither_duplicates_nor_loses(tmp_path, monkeypatch):
    reference = tmp_path / "reference.zarr"
    collect(task_cfg(), 5, reference, seed=10, progress=False)
    out = tmp_path / "resumed.zarr"
    original_run = EpisodeRunner.run
    calls = []

    def interrupted_run(self, seed):
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original_run(self, seed)

    monkeypatch.setattr(EpisodeRunner, "run", interrupted_run)
    with pytest.raises(KeyboardInterrupt):
        collect(task_cfg(), 5, out, seed=10, progress=False)
    assert ReplayBuffer.open(out).n_episodes == 2
    monkeypatch.setattr(EpisodeRunner, "run", original_run)
    summary = collect(task_cfg(), 5, out, seed=10, progress=False)
    assert summary["new_episodes"] == 3 and summary["attempts"] == 3
    resumed, expected = ReplayBuffer.open(out), ReplayBuffer.open(reference)
    np.testing.assert_array_equal(resumed.episode_meta("seed"), np.arange(10, 15))
    np.testing.assert_array_equal(resumed.episode_ends, expected.episode_ends)
    for key in expected.keys():
        np.testing.assert_array_equal(resumed[key], expected[key])


def test_append_and_task_mismatch(tmp_path):
    out = tmp_path / "demo.zarr"
    collect(task_cfg(), 2, out, progress=False)
    summary = collect(task_cfg(), 2, out, progress=False)
    assert summary["new_episodes"] == 0 and summary["attempts"] == 0  # already full: nothing to do
    summary = collect(task_cfg(), 3, out, seed=100, progress=False)
    assert summary["new_episodes"] == 1
    assert ReplayBuffer.open(out).episode_meta("seed").tolist() == [0, 1, 100]
    with pytest.raises(ValueError, match="task"):
        collect(task_cfg("push_t"), 4, out, progress=False)


def test_failed_episodes_are_skipped_unless_kept(tmp_path):
    cfg = task_cfg()
    cfg["max_episode_steps"] = 3  # too short for the expert to succeed
    summary = collect(cfg, 2, tmp_path / "skip.zarr", max_attempts=3, progress=False)
    assert summary["episodes"] == 0 and summary["attempts"] == 3 and not summary["complete"]
    assert summary["expert_success_rate"] == 0.0 and "WARNING" in format_summary(summary)
    summary = collect(cfg, 2, tmp_path / "keep.zarr", keep_failed=True, progress=False)
    buffer = ReplayBuffer.open(tmp_path / "keep.zarr")
    assert buffer.n_episodes == 2 and not buffer.episode_meta("success").any()
    assert buffer.episode_lengths.tolist() == [3, 3]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_episodes"):
        collect(task_cfg(), 0, tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="n_workers"):
        collect(task_cfg(), 1, tmp_path / "x.zarr", n_workers=0)
    with pytest.raises(ValueError, match="env_id"):
        collect({**task_cfg(), "env_id": "actchunk/Nope-v0"}, 1, tmp_path / "x.zarr")


def test_parallel_workers_store_the_same_episodes(tmp_path):
    collect(task_cfg(), 3, tmp_path / "serial.zarr", progress=False)
    collect(task_cfg(), 3, tmp_path / "parallel.zarr", n_workers=2, progress=False)
    serial, parallel = ReplayBuffer.open(tmp_path / "serial.zarr"), ReplayBuffer.open(tmp_path / "parallel.zarr")
    np.testing.assert_array_equal(serial.episode_meta("seed"), parallel.episode_meta("seed"))
    for key in serial.keys():
        np.testing.assert_array_equal(serial[key], parallel[key])


def test_command_line(tmp_path):
    out = tmp_path / "cli.zarr"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data.collect",
            "task=push_around",
            "n_episodes=2",
            f"out={out}",
            "task.env_kwargs.image_size=24",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "expert success" in result.stdout and "100.0%" in result.stdout
    buffer = ReplayBuffer.open(out)
    assert buffer.n_episodes == 2 and buffer["image"].shape[1:] == (24, 24, 3)
