"""Tests for policy/rollout.py: seeds per episode, success at any step, env errors, worker crashes, videos."""

import functools
import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from policy.controller import RecedingHorizonController
from policy.env_errors import ReportEnvErrors
from policy.rollout import run_episodes


class CountingEnv(gymnasium.Env):
    """state = [seed, t]; success only at step seed % 3 + 1; raises at step 2 of `bad_seed`, exits at `crash_seed`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, bad_seed=None, crash_seed=None, terminate_on_success=False, outcome=False):
        self.observation_space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (2,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)
        self.bad_seed, self.crash_seed, self.terminate_on_success = bad_seed, crash_seed, terminate_on_success
        self.outcome = outcome  # report info["outcome"]: "odd" or "even" step
        self.seed_, self.t = 0, 0

    def _obs(self):
        return {"state": np.array([self.seed_, self.t], dtype=np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_, self.t = seed, 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.t += 1
        if self.seed_ == self.bad_seed and self.t == 2:
            raise FloatingPointError("physics blew up")
        if self.seed_ == self.crash_seed and self.t == 2:
            os._exit(3)
        success = self.t == self.seed_ % 3 + 1
        info = {"is_success": success, **({"outcome": "odd" if self.t % 2 else "even"} if self.outcome else {})}
        return self._obs(), float(self.t), bool(success and self.terminate_on_success), False, info

    def render(self):
        return np.full((16, 16, 3), self.t * 10, dtype=np.uint8)


class ZeroPolicy:
    """Plans zero actions; counts calls."""

    horizon, n_obs_steps, n_action_steps, action_dim = 2, 1, 2, 1
    obs_shapes = {"state": (2,)}
    device = torch.device("cpu")

    def predict_action(self, obs, *, sampler=None, num_steps=None, generator=None):
        chunk = torch.zeros(obs["state"].shape[0], self.horizon, 1)
        return {"action": chunk, "action_pred": chunk}


def _make(max_steps=5, **kwargs):
    return ReportEnvErrors(TimeLimit(CountingEnv(**kwargs), max_episode_steps=max_steps))


def _run(n_envs, seeds, asynchronous=False, **kwargs):
    controller = RecedingHorizonController(ZeroPolicy(), n_envs)
    make_env = functools.partial(_make, **kwargs.pop("env", {}))
    return run_episodes(make_env, controller, seeds, progress=False, asynchronous=asynchronous, **kwargs)


def test_every_seed_runs_once_with_success_at_any_step_and_per_slot_resets():
    records = _run(2, [10, 11, 12, 13, 14])
    assert [r["seed"] for r in records] == [10, 11, 12, 13, 14] and [r["episode"] for r in records] == list(range(5))
    # success happens at one step only (then is_success is False again): still counted
    assert all(r["success"] and r["length"] == 5 and r["error"] is None for r in records)
    assert records[0]["max_reward"] == 5.0 and records[0]["final_reward"] == 5.0


def test_episodes_record_the_last_outcome_the_env_reports():
    assert [r["outcome"] for r in _run(2, [0, 1, 2], env={"outcome": True, "terminate_on_success": True})] == [
        "odd",
        "even",
        "odd",
    ]
    assert all(r["outcome"] is None for r in _run(1, [0]))


def test_terminate_on_success_ends_episodes_at_their_own_lengths():
    records = _run(3, [0, 1, 2, 3], env={"terminate_on_success": True})
    assert [r["length"] for r in records] == [1, 2, 3, 1]


def test_env_error_fails_only_that_episode_and_the_others_complete():
    records = _run(2, [20, 21, 22], env={"bad_seed": 21})
    bad = records[1]
    assert bad["seed"] == 21 and not bad["success"] and bad["length"] == 2
    assert bad["error"] == "FloatingPointError: physics blew up"
    assert all(r["error"] is None and r["length"] == 5 for r in (records[0], records[2]))


def test_dead_worker_fails_its_episode_and_in_flight_episodes_are_rerun():
    records = _run(2, [30, 31, 32], asynchronous=True, env={"crash_seed": 30})
    assert records[0]["seed"] == 30 and records[0]["error"] is not None and not records[0]["success"]
    assert [(r["seed"], r["length"], r["error"]) for r in records[1:]] == [(31, 5, None), (32, 5, None)]


def test_videos_of_the_first_episodes_are_named_by_outcome(tmp_path):
    records = _run(2, [40, 41, 42], env={"bad_seed": 41}, video_dir=tmp_path, n_videos=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "episode_0_seed40_success.mp4",
        "episode_1_seed41_failure.mp4",
    ]
    assert records[0]["success"] and (tmp_path / "episode_0_seed40_success.mp4").stat().st_size > 0
    assert records[1]["video"] == str(tmp_path / "episode_1_seed41_failure.mp4") and records[2]["video"] is None


def test_wrapper_reports_reset_errors_and_bad_arguments_are_refused():
    class BrokenReset(CountingEnv):
        def reset(self, *, seed=None, options=None):
            raise RuntimeError("cannot load model\nsecond line")

    obs, info = ReportEnvErrors(BrokenReset()).reset(seed=0)
    assert info["error"] == "RuntimeError: cannot load model" and np.all(obs["state"] == 0)
    with pytest.raises(ValueError, match="seeds is empty"):
        _run(1, [])
    with pytest.raises(ValueError, match="video_dir"):
        _run(1, [0], n_videos=1)


def test_workers_fork_until_this_process_has_loaded_a_gl_driver():
    code = (
        "import envs, gymnasium\n"
        "from policy.rollout import worker_start_method\n"
        "before = worker_start_method()\n"
        "env = gymnasium.make('actchunk/PushAround-v0'); env.reset(seed=0)\n"
        "print(before, worker_start_method()); env.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.split() == ["fork", "forkserver"]
