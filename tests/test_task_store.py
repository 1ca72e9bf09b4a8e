"""Tests for data/task_store.py: a store that fits the task is windowed; an empty validation split warns."""

from __future__ import annotations

import numpy as np
import pytest

from configs import compose_config
from data.replay_buffer import ReplayBuffer
from data.task_store import open_training_data


def _store(path, lengths):
    buf = ReplayBuffer.create(path, attrs={"task": "push_around", "fps": 10})
    rng = np.random.default_rng(0)
    for n in lengths:
        buf.add_episode({"state": rng.normal(size=(n, 6)).astype(np.float32), "action": rng.normal(size=(n, 2))})
    buf.close()
    return path


def _cfg(store, *extra):
    return compose_config("train", ["task=push_around", "obs=state", f"task.dataset_path={store}", "name=t", *extra])


def test_windows_of_a_fitting_store_and_the_tasks_shape_meta(tmp_path):
    data = open_training_data(_cfg(_store(tmp_path / "s.zarr", [30, 30, 30, 30]), "dataset.val_ratio=0.25"))
    assert data.shape_meta == {"obs": {"state": {"shape": [6], "type": "low_dim"}}, "action": {"shape": [2]}}
    assert len(data.train_set) == 3 * (30 - 16 + 1 + 7 + 1) and len(data.val_set) == 30 - 16 + 1 + 7 + 1


def test_a_validation_split_without_windows_warns_and_names_the_fix(tmp_path):
    store = _store(tmp_path / "short.zarr", [30, 5])  # the held-out 5-step episode is shorter than a window
    with pytest.warns(UserWarning, match="leaves no validation windows.*set it to 0"):
        data = open_training_data(_cfg(store, "dataset.val_ratio=0.5", "seed=0"))  # seed 0 holds out episode 1
    assert len(data.val_set) == 0


def test_a_store_with_another_shape_is_refused(tmp_path):
    store = _store(tmp_path / "s.zarr", [30])
    with pytest.raises(ValueError, match=r"holds 'state' with shape \(6,\) but the task config says \(7,\)"):
        open_training_data(_cfg(store, "task.state_shape_meta.obs.state.shape=[7]"))
