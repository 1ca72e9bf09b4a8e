"""Tests for envs/task_env.py and the task registry's env-id check."""

from __future__ import annotations

import pickle

import pytest
from omegaconf import OmegaConf

from configs import compose_config
from envs import check_env_id
from envs.task_env import TaskEnv


def _task(name: str = "push_around") -> dict:
    return OmegaConf.to_container(compose_config("train", [f"task={name}"]).task, resolve=True)


def test_factory_is_picklable_and_builds_the_configured_env():
    task = TaskEnv.from_config(_task())
    assert (task.env_id, task.fps, task.max_episode_steps) == ("actchunk/PushAround-v0", 10, 100)
    make_env = pickle.loads(pickle.dumps(task.factory(include_image=False)))  # what a vector-env worker receives
    env = make_env()
    try:
        obs, _ = env.reset(seed=0)
        assert "image" not in obs and env.spec.max_episode_steps == 100 and env.unwrapped.terminate_on_success
    finally:
        env.close()
    env = task.factory()()
    try:
        assert env.observation_space["image"].shape == (96, 96, 3)
    finally:
        env.close()


def test_incomplete_configs_and_unknown_env_ids_are_refused():
    task = _task()
    del task["fps"]
    with pytest.raises(ValueError, match=r"task config lacks \['fps'\]"):
        TaskEnv.from_config(task)
    with pytest.raises(ValueError, match="unknown env id 'actchunk/Nope-v0'.*actchunk/PushT-v0"):
        TaskEnv.from_config({**_task(), "env_id": "actchunk/Nope-v0"})
    check_env_id("actchunk/MetaWorld-reach-v3")
