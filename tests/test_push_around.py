"""Tests for envs.push_around (the task) and envs.experts.push_around (its two-mode expert)."""

from __future__ import annotations

import gymnasium
import mujoco
import numpy as np
import pytest

import envs  # noqa: F401  (registers the tasks)
from envs.experts import make_expert
from envs.experts.push_around import PushAroundExpert

ENV_ID = "actchunk/PushAround-v0"


def make_env() -> gymnasium.Env:
    return gymnasium.make(ENV_ID, include_image=False, disable_env_checker=True)


def run_expert(env: gymnasium.Env, expert: PushAroundExpert, seed: int) -> tuple[bool, np.ndarray]:
    """Run the expert until success or truncation; return (success, block xy trace (T, 2))."""
    obs, _ = env.reset(seed=seed)
    expert.reset(env, np.random.default_rng([seed, 1]))
    blocks = [obs["state"][2:4]]
    while True:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        blocks.append(obs["state"][2:4])
        if info["is_success"] or terminated or truncated:
            return bool(info["is_success"]), np.stack(blocks)


def test_expert_succeeds_by_both_sides():
    env = make_env()
    expert = make_expert(ENV_ID)
    sides = {}
    for seed in range(8):
        success, blocks = run_expert(env, expert, seed)
        assert success, f"expert failed on seed {seed}"
        side = expert.mode_names[expert.mode]
        sides[side] = sides.get(side, 0) + 1
        extreme = blocks[:, 0].min() if side == "left" else -blocks[:, 0].max()
        assert extreme < -env.unwrapped.wall_half[0], f"seed {seed}: {side} detour did not pass the wall's end"
    assert set(sides) == {"left", "right"}
    env.close()


def test_wall_blocks_the_straight_push():
    env = make_env()
    obs, _ = env.reset(seed=0)
    block = obs["state"][2:4]
    for y in np.linspace(block[1] - 0.05, 0.2, 40):  # slide in behind the block and push straight ahead
        obs, _, _, _, info = env.step(np.array([block[0], y], np.float32))
        assert not info["is_success"]
    task = env.unwrapped
    assert obs["state"][3] < task.wall_center[1] - task.wall_half[1]  # block stopped in front of the wall
    env.close()


def test_success_and_reward():
    env = make_env()
    env.reset(seed=0)
    task = env.unwrapped
    far_reward, far_success = task._evaluate()
    assert not far_success and 0.0 <= far_reward < 1.0
    task.data.qpos[0:2] = task.goal_center + [task.goal_radius * 0.5, 0.0]
    mujoco.mj_forward(task.model, task.data)
    near_reward, near_success = task._evaluate()
    assert near_success and near_reward == 1.0
    task.data.qpos[0:2] = task.goal_center + [0.0, -task.goal_radius * 1.5]
    reward, success = task._evaluate()
    assert not success and far_reward < reward < 1.0
    env.close()


def test_reset_puts_block_in_front_of_wall():
    env = make_env()
    task = env.unwrapped
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        assert not info["is_success"]
        block_y = obs["state"][3]
        assert block_y + np.sqrt(2) * task.block_half < task.wall_center[1] - task.wall_half[1]
        assert np.isclose(np.hypot(*obs["state"][4:6]), 1.0)  # (cos yaw, sin yaw)
    env.close()


def test_expert_noise():
    with pytest.raises(ValueError, match="noise_std"):
        PushAroundExpert(noise_std=-1.0)
    env = make_env()
    obs, _ = env.reset(seed=0)
    actions = {}
    for noise in (0.0, 0.01):
        expert = PushAroundExpert(noise_std=noise)
        expert.reset(env, np.random.default_rng(0))
        actions[noise] = np.stack([expert.act(obs) for _ in range(2)])
    np.testing.assert_array_equal(actions[0.0][0], actions[0.0][1])  # noiseless: same obs, same action
    assert not np.allclose(actions[0.01][0], actions[0.01][1])
    assert np.abs(actions[0.01] - actions[0.0]).max() < 0.05
    env.close()


def test_make_expert_rejects_unknown_task():
    with pytest.raises(ValueError, match="no scripted expert"):
        make_expert("actchunk/Nope-v0")
