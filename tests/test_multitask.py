"""Tests for data/multitask.py: merging task stores, per-task instructions, sub-task configs."""

from __future__ import annotations

import numpy as np
import pytest

from data.multitask import merge_stores, subtask_config, task_instructions
from data.replay_buffer import ReplayBuffer

ATTRS = {"fps": 80, "obs_keys": ["agent_pos"], "env_kwargs": {"image_size": 32}}


def _store(path, task, instruction, n, attrs=ATTRS, meta=True):
    buffer = ReplayBuffer.create(path, attrs={"task": task, **attrs})
    for i in range(n):
        data = {"agent_pos": np.full((5 + i, 4), i, np.float32), "action": np.full((5 + i, 4), len(task), np.float32)}
        buffer.add_episode(data, {"seed": i, "instruction": instruction, "task": task} if meta else {"seed": i})
    buffer.close()
    return path


def test_merged_store_holds_every_episode_with_its_task_and_instruction(tmp_path):
    a = _store(tmp_path / "a.zarr", "reach-v3", "reach the goal position", 2)
    b = _store(tmp_path / "b.zarr", "push-v3", "push the puck to the goal", 3)
    summary = merge_stores([a, b], tmp_path / "multi.zarr", "metaworld_multi", progress=False)
    merged = ReplayBuffer.open(tmp_path / "multi.zarr")
    assert summary["episodes"] == merged.n_episodes == 5
    assert merged.attrs["task"] == "metaworld_multi" and merged.attrs["tasks"] == ["reach-v3", "push-v3"]
    assert [str(t) for t in merged.episode_meta("task")] == ["reach-v3"] * 2 + ["push-v3"] * 3
    np.testing.assert_array_equal(merged.get_episode(3)["agent_pos"], ReplayBuffer.open(b).get_episode(1)["agent_pos"])
    assert task_instructions(merged) == {"reach-v3": "reach the goal position", "push-v3": "push the puck to the goal"}


def test_sources_that_do_not_fit_are_refused(tmp_path):
    a = _store(tmp_path / "a.zarr", "reach-v3", "reach", 1)
    other = _store(tmp_path / "b.zarr", "push-v3", "push", 1, attrs={**ATTRS, "fps": 10})
    with pytest.raises(ValueError, match="fps=10"):
        merge_stores([a, other], tmp_path / "m.zarr", "m", progress=False)
    bare = _store(tmp_path / "c.zarr", "push-v3", "push", 1, meta=False)
    with pytest.raises(ValueError, match="lacks meta/task; re-collect"):
        merge_stores([a, bare], tmp_path / "m.zarr", "m", progress=False)
    with pytest.raises(ValueError, match="at least two"):
        merge_stores([a], tmp_path / "m.zarr", "m", progress=False)
    assert not (tmp_path / "m.zarr").exists()


def test_subtask_config_points_at_the_task_and_its_own_store():
    multi = {"name": "mw", "tasks": {"reach-v3": "actchunk/MetaWorld-reach-v3"}, "dataset_path": "d/mw.zarr", "fps": 80}
    single = subtask_config(multi, "reach-v3")
    assert single == {
        "name": "reach-v3",
        "env_id": "actchunk/MetaWorld-reach-v3",
        "dataset_path": "d/mw_parts/reach-v3.zarr",
        "fps": 80,
    }
    with pytest.raises(ValueError, match="not one of"):
        subtask_config(multi, "push-v3")
