"""Tests for envs.mujoco_env (the task base class) and the task registry, run over every registered task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import envs
from configs import compose_config
from envs.mujoco_env import MujocoTaskEnv

TASK_IDS = sorted(envs.TASKS)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "task"


def make(env_id: str, **kwargs) -> gymnasium.Env:
    """Make a task without the passive env checker (tests call check_env explicitly)."""
    return gymnasium.make(env_id, disable_env_checker=True, **kwargs)


def rollout(env: gymnasium.Env, seed: int, actions: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Observations after reset(seed) and after each action."""
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        trace.append(env.step(action)[0])
    return trace


@pytest.fixture(params=TASK_IDS)
def env_id(request) -> str:
    return request.param


def test_spaces_and_dtypes(env_id):
    env = make(env_id, image_size=48)
    obs, info = env.reset(seed=0)
    assert isinstance(env.action_space, spaces.Box) and env.action_space.dtype == np.float32
    assert {"image", "agent_pos", "state"} <= set(obs)
    assert obs["image"].shape == (48, 48, 3) and obs["image"].dtype == np.uint8
    assert obs["agent_pos"].dtype == np.float32 and obs["state"].dtype == np.float32
    assert obs["image"].std() > 0  # the camera sees something
    assert env.observation_space.contains(obs)
    assert info["is_success"] in (False, True)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float) and isinstance(info["is_success"], bool)
    assert terminated is False and truncated is False
    env.close()


@pytest.mark.filterwarnings("ignore::UserWarning")  # advice about unbounded / asymmetric Boxes
def test_passes_gymnasium_env_checker(env_id):
    env = make(env_id, image_size=32)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_without_image(env_id):
    env = make(env_id, include_image=False)
    obs, _ = env.reset(seed=0)
    assert "image" not in obs and "image" not in env.observation_space.spaces
    assert env.observation_space.contains(obs)
    env.close()


def test_deterministic_under_seed(env_id):
    probe = make(env_id, include_image=False)
    probe.action_space.seed(3)
    actions = np.stack([probe.action_space.sample() for _ in range(5)])
    probe.close()
    env_a, env_b = make(env_id, image_size=32), make(env_id, image_size=32)
    trace_a, trace_b = rollout(env_a, 7, actions), rollout(env_b, 7, actions)
    for obs_a, obs_b in zip(trace_a, trace_b):
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
    other = env_a.reset(seed=8)[0]
    assert not np.array_equal(other["state"], trace_a[0]["state"])  # reset randomizes poses
    env_a.close(), env_b.close()


def test_non_finite_action_raises(env_id):
    env = make(env_id, include_image=False)
    env.reset(seed=0)
    action = env.action_space.sample()
    for bad in (np.nan, np.inf):
        broken = action.copy()
        broken[0] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            env.step(broken)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(env.action_space.shape[0] + 1, np.float32))
    env.close()


def test_out_of_range_action_is_clipped(env_id):
    env_a, env_b = make(env_id, include_image=False), make(env_id, include_image=False)
    space = env_a.action_space
    wild = np.where(np.arange(space.shape[0]) % 2 == 0, 10.0, -10.0) * np.maximum(np.abs(space.high), 1.0)
    obs_a = rollout(env_a, 1, [wild] * 3)[-1]
    obs_b = rollout(env_b, 1, [np.clip(wild, space.low, space.high)] * 3)[-1]
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
    env_a.close(), env_b.close()


def test_render_and_close(env_id):
    env = make(env_id, render_size=64, include_image=False)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0
    base = env.unwrapped
    assert len(base._renderers) == 1
    env.close()
    assert len(base._renderers) == 0
    env.close()  # closing twice is harmless
    silent = make(env_id, render_mode=None, include_image=False)
    silent.reset(seed=0)
    assert silent.render() is None
    silent.close()


def test_registered_with_time_limit(env_id):
    spec = gymnasium.spec(env_id)
    assert spec.max_episode_steps == envs.TASKS[env_id][1]
    env = make(env_id, include_image=False)
    env.reset(seed=0)
    truncated = False
    for _ in range(spec.max_episode_steps):
        truncated = env.step(env.action_space.sample())[3]
    assert truncated
    env.close()


OWN_TASK_CONFIGS = [
    p for p in sorted(CONFIG_DIR.glob("*.yaml")) if not p.stem.startswith("metaworld")
]  # test_metaworld.py checks the MetaWorld ones


@pytest.mark.parametrize("config", OWN_TASK_CONFIGS, ids=lambda p: p.stem)
def test_task_config_matches_env(config):
    cfg = OmegaConf.to_container(compose_config("train", [f"task={config.stem}"]).task, resolve=True)
    assert cfg["name"] == config.stem and cfg["env_id"] in envs.TASKS
    assert cfg["max_episode_steps"] == envs.TASKS[cfg["env_id"]][1]
    env = make(cfg["env_id"], **cfg["env_kwargs"])
    assert cfg["fps"] == env.metadata["render_fps"]
    for meta in (cfg["shape_meta"], cfg["state_shape_meta"]):
        for key, spec in meta["obs"].items():
            assert tuple(spec["shape"]) == env.observation_space[key].shape, key
        assert tuple(meta["action"]["shape"]) == env.action_space.shape
    env.close()


def test_import_is_lazy_and_idempotent():
    code = (
        "import warnings, sys, importlib; warnings.simplefilter('error'); import envs; importlib.reload(envs); "
        "assert 'mujoco' not in sys.modules, 'import envs imported mujoco'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


TOY_XML = """
<mujoco>
  <option timestep="0.02"/>
  <worldbody>
    <camera name="cam" pos="0 0 1"/>
    <geom type="plane" size="1 1 0.1"/>
    <body name="ball" pos="0 0 0.1"><joint name="x" type="slide" axis="1 0 0"/><geom type="sphere" size="0.05"/></body>
  </worldbody>
  <actuator><position joint="x" kp="10"/></actuator>
</mujoco>
"""


class ToyEnv(MujocoTaskEnv):
    """Smallest possible task, for testing the base class's own checks."""

    def __init__(self, with_action_space: bool = True, **kwargs) -> None:
        if with_action_space:
            self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        super().__init__(TOY_XML, **{"obs_camera": "cam", "frame_skip": 5, **kwargs})

    def _reset_task(self, rng):
        self.data.qpos[0] = rng.uniform(-0.1, 0.1)

    def _apply_action(self, action):
        self.data.ctrl[:] = action

    def _low_dim_obs(self):
        return {"agent_pos": self.data.qpos[:1].astype(np.float32), "state": self.data.qpos[:1].astype(np.float32)}

    def _evaluate(self):
        return 0.0, False


def test_base_rejects_bad_construction():
    with pytest.raises(TypeError, match="action_space"):
        ToyEnv(with_action_space=False)
    with pytest.raises(ValueError, match="control_dt"):
        ToyEnv(frame_skip=3)
    with pytest.raises(ValueError, match="camera"):
        ToyEnv(obs_camera="nope")
    with pytest.raises(ValueError, match="render_mode"):
        ToyEnv(render_mode="human")
    env = ToyEnv(include_image=False)
    assert env.metadata["render_fps"] == 10 and env.model.vis.quality.shadowsize == 0


def test_base_raises_on_unstable_physics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo appends its warning to MUJOCO_LOG.TXT in the working directory
    env = ToyEnv(include_image=False)
    env.reset(seed=0)
    env.data.qvel[0] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        env.step(np.zeros(1, np.float32))
