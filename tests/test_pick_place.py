"""Tests for envs/pick_place.py and its scripted expert envs/experts/pick_place.py."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from envs.experts.pick_place import PickPlaceExpert
from envs.pick_place import CUBE_RANGE, PickPlaceEnv

OPEN_HOLD = np.array([0.0, 0.0, 0.15, -1.0], np.float32)


@pytest.fixture
def env():
    env = PickPlaceEnv(include_image=False)
    yield env
    env.close()


def _put_cube(env: PickPlaceEnv, xyz: tuple[float, float, float]) -> None:
    """Place the cube (upright, at rest) and park the open gripper above the table centre."""
    env.data.qpos[0:3] = xyz
    env.data.qpos[3:7] = [1.0, 0.0, 0.0, 0.0]
    env.data.qpos[7:10] = OPEN_HOLD[:3]
    env.data.mocap_pos[0] = OPEN_HOLD[:3]
    env.data.qvel[:] = 0.0


def test_reset_obs_layout_and_cube_on_table(env):
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert obs["agent_pos"].dtype == np.float32 and obs["agent_pos"].shape == (4,)
        assert obs["state"].dtype == np.float32 and obs["state"].shape == (11,)
        np.testing.assert_allclose(obs["state"][:4], obs["agent_pos"])
        cube = obs["state"][4:7]
        assert abs(cube[0]) <= CUBE_RANGE[0] and abs(cube[1]) <= CUBE_RANGE[1]
        assert cube[2] == pytest.approx(env.cube_half)
        assert np.linalg.norm(obs["state"][7:11]) == pytest.approx(1.0, abs=1e-5)
        assert obs["agent_pos"][3] == pytest.approx(2 * env.finger_open)  # starts fully open
        assert not info["is_success"]


def test_seeded_reset_and_steps_are_deterministic(env):
    rng = np.random.default_rng(0)
    actions = rng.uniform(env.action_space.low, env.action_space.high, (10, 4)).astype(np.float32)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=3)
        runs.append(np.stack([obs["state"]] + [env.step(a)[0]["state"] for a in actions]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(env.reset(seed=4)[0]["state"], runs[0][0])


@pytest.mark.parametrize("bin_index", [0, 1])
def test_success_only_when_cube_rests_in_a_bin(env, bin_index):
    env.reset(seed=0)
    _put_cube(env, (*env.bin_centers[bin_index], env.cube_half))
    _, reward, terminated, _, info = env.step(OPEN_HOLD)
    assert info["is_success"] and reward == 1.0 and not terminated
    assert info["outcome"] == ("left_bin", "right_bin")[bin_index]  # the bin the cube is in (instruction following)
    _put_cube(env, (*env.bin_centers[bin_index], 0.15))  # above the bin, falling
    _, reward, _, _, info = env.step(OPEN_HOLD)
    assert not info["is_success"] and reward == 0.0
    _put_cube(env, (0.0, 0.05, env.cube_half))  # on the table between the bins
    _, reward, _, _, info = env.step(OPEN_HOLD)
    assert not info["is_success"] and reward == 0.0 and info["outcome"] == ""


def test_gripper_tracks_target_and_closes(env):
    env.reset(seed=0)
    target = np.array([0.05, -0.05, 0.1, 1.0], np.float32)
    for _ in range(5):
        obs, *_ = env.step(target)
    np.testing.assert_allclose(obs["agent_pos"][:3], target[:3], atol=0.003)
    assert obs["agent_pos"][3] < 0.003  # closed on nothing


def test_action_checks(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0.0, np.nan, 0.1, 0.0], np.float32))
    env.step(np.array([1.0, -1.0, -1.0, 5.0], np.float32))
    np.testing.assert_allclose(env.data.mocap_pos[0], [0.3, -0.15, 0.02], atol=1e-6)
    np.testing.assert_allclose(env.data.ctrl, 0.0)  # command clipped to +1: fully closed


def test_image_observation_and_render():
    env = PickPlaceEnv(image_size=32, render_size=48)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
        assert obs["image"].std() > 5
        assert env.render().shape == (48, 48, 3)
    finally:
        env.close()


def test_expert_places_cube_in_the_chosen_bin(env):
    expert = PickPlaceExpert()
    modes = []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        expert.reset(env, np.random.default_rng(seed))
        modes.append(expert.mode)
        for _ in range(200):
            obs, _, _, _, info = env.step(expert.act(obs))
            if info["is_success"]:
                break
        assert info["is_success"], f"seed {seed} failed"
        cube_xy = obs["state"][4:6]
        assert np.linalg.norm(cube_xy - env.bin_centers[expert.mode]) < env.bin_inner_half
    assert set(modes) == {0, 1}


def test_expert_rejects_negative_noise():
    with pytest.raises(ValueError, match="noise_std"):
        PickPlaceExpert(noise_std=-1.0)


def test_top_camera_sees_the_cube_where_it_is():
    red = {}
    for side, x in (("left", -0.07), ("right", 0.07)):
        env = PickPlaceEnv(image_size=64, camera="top")
        try:
            env.reset(seed=0)
            env.data.qpos[0:2] = [x, 0.0]  # move the cube, keep it on the table
            mujoco.mj_forward(env.model, env.data)
            image = env._get_obs()["image"]  # (64, 64, 3) from the top camera
            mask = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)  # the red cube
            assert 6 <= mask.sum() <= 200, mask.sum()
            red[side] = np.argwhere(mask)[:, 1].mean()  # mean column of red pixels
            assert env.render().shape == (256, 256, 3)  # videos stay on the front camera
        finally:
            env.close()
    assert red["left"] < 32 < red["right"], red
    with pytest.raises(ValueError, match="camera 'side' is not in the MJCF"):
        PickPlaceEnv(camera="side")
