"""Tests for envs/metaworld.py, envs/metaworld_tasks.py, envs/experts/metaworld.py and MetaWorld collection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium
import mujoco
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import envs
import eval as eval_script
import train
from data.collect import collect
from data.replay_buffer import ReplayBuffer
from envs.experts import make_expert
from envs.metaworld import MetaWorldEnv
from envs.metaworld_tasks import METAWORLD_INSTRUCTIONS, METAWORLD_TASK_NAMES, metaworld_env_id
from envs.task_env import TaskEnv
from policy.checkpoint import checkpoint_config, load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]


def test_static_task_names_equal_metaworlds_and_are_registered():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    assert list(METAWORLD_TASK_NAMES) == list(ALL_V3_ENVIRONMENTS)
    assert set(METAWORLD_TASK_NAMES) == set(ENV_POLICY_MAP)
    for name in METAWORLD_TASK_NAMES:
        spec = gymnasium.spec(metaworld_env_id(name))
        assert spec.kwargs == {"task_name": name} and spec.max_episode_steps == 500
    assert envs.METAWORLD_TASKS["actchunk/MetaWorld-pick-place-v3"] == "pick-place-v3"


def test_import_envs_without_metaworld_then_make_says_how_to_install():
    code = (
        "import sys; sys.modules['metaworld'] = None\n"
        "import gymnasium, envs\n"
        "try:\n"
        "    gymnasium.make('actchunk/MetaWorld-reach-v3')\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "MetaWorldNotInstalledError MetaWorld tasks need the optional extra: pip install -e .[metaworld]"
    )


def test_spaces_dtypes_and_step_contract():
    env = gymnasium.make("actchunk/MetaWorld-pick-place-v3", image_size=32, disable_env_checker=True)
    try:
        space = env.observation_space
        assert set(space) == {"image", "agent_pos", "state"}
        assert space["image"].shape == (32, 32, 3) and space["image"].dtype == np.uint8
        assert space["agent_pos"].shape == (4,) and space["state"].shape == (39,)
        assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
        assert env.metadata["render_fps"] == 80 and env.spec.max_episode_steps == 500
        obs, info = env.reset(seed=0)
        assert obs in space and info == {"is_success": False}
        assert obs["state"].dtype == np.float32 and obs["agent_pos"].dtype == np.float32
        np.testing.assert_array_equal(obs["agent_pos"], obs["state"][:4])
        assert np.any(obs["state"][-3:] != 0)  # the goal is observed
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0, 1.0, -1.0], np.float32))
        assert obs in space and isinstance(reward, float) and reward > 0
        assert terminated is False and truncated is False and info == {"is_success": False}
        assert env.render().shape == (256, 256, 3)
        with pytest.raises(ValueError, match="NaN"):
            env.step(np.array([0.0, np.nan, 0.0, 0.0]))
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(3))
    finally:
        env.close()


def test_bad_task_name_and_camera_are_refused():
    with pytest.raises(ValueError, match="unknown MetaWorld task 'pick-plac-v3'"):
        MetaWorldEnv("pick-plac-v3")
    with pytest.raises(gymnasium.error.Error):
        gymnasium.make("actchunk/MetaWorld-pick-plac-v3")
    with pytest.raises(ValueError, match="camera 'front'"):
        MetaWorldEnv("reach-v3", camera="front")


def _hand_row(segmentation: np.ndarray, model: mujoco.MjModel) -> float:
    """Mean image row of the pixels of body ``right_hand`` and its descendants in a (H, W, 2) segmentation render."""
    root = model.body("right_hand").id
    in_subtree = np.zeros(model.nbody, bool)
    for body in range(model.nbody):  # parents come before their children
        in_subtree[body] = body == root or (body > 0 and in_subtree[model.body_parentid[body]])
    geom_ids = np.flatnonzero(in_subtree[model.geom_bodyid])
    mask = (segmentation[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(segmentation[..., 0], geom_ids)
    assert mask.sum() > 5, "gripper not visible"
    return float(np.nonzero(mask)[0].mean())


def test_upside_down_cameras_are_rotated_upright():
    env = MetaWorldEnv("reach-v3", image_size=64)  # default camera: corner
    model, data = env.sim.model, env.sim.data
    raw = mujoco.Renderer(model, 64, 64)
    try:
        assert env.upside_down_cameras == {"corner", "corner2", "corner3", "corner4"}
        obs, _ = env.reset(seed=0)
        raw.update_scene(data, camera="corner")
        raw_image = raw.render()
        assert not np.array_equal(obs["image"], raw_image)
        np.testing.assert_array_equal(obs["image"], raw_image[::-1, ::-1])
        raw.update_scene(data, camera="topview")
        np.testing.assert_array_equal(env.render_camera_image("topview", 64), raw.render())
        # Upright means world up is image up: lowering the gripper moves it down the rotated image.
        raw.enable_segmentation_rendering()
        rows = []
        for _ in range(2):
            raw.update_scene(data, camera="corner")
            rows.append(_hand_row(raw.render()[::-1, ::-1], model))
            for _ in range(12):
                env.step(np.array([0.0, 0.0, -1.0, -1.0]))
        assert rows[1] > rows[0] + 3  # by about 5 rows; 5 rows up without the rotation
    finally:
        raw.close()
        env.close()


def test_layouts_are_reproducible_per_seed_and_differ_across_seeds():
    env = MetaWorldEnv("pick-place-v3", include_image=False)
    try:
        global_state = np.random.get_state()[1].copy()
        actions = np.random.default_rng(0).uniform(-1, 1, (5, 4))
        runs = []
        for _ in range(2):
            obs, _ = env.reset(seed=7)
            runs.append(np.stack([obs["state"]] + [env.step(a)[0]["state"] for a in actions]))
        np.testing.assert_array_equal(runs[0], runs[1])
        layouts = np.stack([env.reset(seed=s)[0]["state"][[4, 5, 36, 37, 38]] for s in range(5)])  # object xy, goal
        assert len(np.unique(layouts, axis=0)) == 5
        assert not np.array_equal(env.reset()[0]["state"], env.reset()[0]["state"])  # unseeded resets differ too
        np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # numpy's global generator untouched
    finally:
        env.close()


@pytest.mark.parametrize("task_name", ["reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3"])
def test_metaworld_expert_succeeds_through_the_wrapper(task_name):
    env_id = metaworld_env_id(task_name)
    env = gymnasium.make(env_id, include_image=False, terminate_on_success=True, disable_env_checker=True)
    expert = make_expert(env_id)
    try:
        for seed in range(2):
            obs, _ = env.reset(seed=seed)
            expert.reset(env, np.random.default_rng([seed, 1]))
            terminated = truncated = False
            while not (terminated or truncated):
                action = expert.act(obs)
                assert action.dtype == np.float32 and np.all(np.abs(action) <= 1)
                obs, _, terminated, truncated, info = env.step(action)
            assert terminated and info["is_success"], f"{task_name} seed {seed}"
    finally:
        env.close()


def test_expert_noise_is_seeded_and_bounded():
    env = MetaWorldEnv("reach-v3", include_image=False)
    try:
        obs, _ = env.reset(seed=0)
        clean, noisy = (
            make_expert("actchunk/MetaWorld-reach-v3"),
            make_expert("actchunk/MetaWorld-reach-v3", noise_std=0.5),
        )
        clean.reset(env, np.random.default_rng(0))
        draws = []
        for _ in range(2):
            noisy.reset(env, np.random.default_rng(3))
            draws.append(noisy.act(obs))
        np.testing.assert_array_equal(draws[0], draws[1])
        assert not np.allclose(draws[0], clean.act(obs)) and np.all(np.abs(draws[0]) <= 1)
        with pytest.raises(ValueError, match="MetaWorld env"):
            clean.reset(gymnasium.make("actchunk/PushT-v0", include_image=False), np.random.default_rng(0))
    finally:
        env.close()


def test_async_vector_env():
    # spawn, not the default fork: earlier tests opened EGL contexts in this process, and a forked child of a
    # process that ever initialised EGL hangs in its own EGL setup.
    vec = gymnasium.make_vec(
        "actchunk/MetaWorld-reach-v3",
        num_envs=2,
        vectorization_mode="async",
        vector_kwargs={"context": "spawn"},
        image_size=32,
    )
    try:
        obs, info = vec.reset(seed=[0, 1])
        assert obs["image"].shape == (2, 32, 32, 3) and obs["state"].shape == (2, 39)
        assert not np.array_equal(obs["state"][0, -3:], obs["state"][1, -3:])  # different goals
        obs, reward, terminated, truncated, info = vec.step(np.zeros((2, 4), np.float32))
        assert reward.shape == (2,) and info["is_success"].shape == (2,)
    finally:
        vec.close()


def _task_cfg(*overrides: str) -> dict:
    """configs/task/metaworld.yaml as data.collect composes it, resolved."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose(config_name="collect", overrides=["task=metaworld", *overrides])
    return OmegaConf.to_container(cfg.task, resolve=True)


def test_task_config_matches_env():
    cfg = _task_cfg()
    assert cfg["name"] == "pick-place-v3" and cfg["env_id"] == "actchunk/MetaWorld-pick-place-v3"
    env = gymnasium.make(cfg["env_id"], max_episode_steps=cfg["max_episode_steps"], **cfg["env_kwargs"])
    try:
        assert (
            cfg["fps"] == env.metadata["render_fps"]
            and cfg["max_episode_steps"] == 200 < gymnasium.spec(cfg["env_id"]).max_episode_steps  # DP3's, not 500
        )
        for meta in (cfg["shape_meta"], cfg["state_shape_meta"]):
            for key, spec in meta["obs"].items():
                assert tuple(spec["shape"]) == env.observation_space[key].shape, key
            assert tuple(meta["action"]["shape"]) == env.action_space.shape
    finally:
        env.close()


def test_collect_command_config_for_any_task(tmp_path):
    task_cfg = _task_cfg("task.name=reach-v3", "task.env_kwargs.image_size=32")
    assert task_cfg["env_id"] == "actchunk/MetaWorld-reach-v3"
    assert task_cfg["dataset_path"] == "data_store/metaworld_reach-v3.zarr"
    out = tmp_path / "reach.zarr"
    summary = collect(task_cfg, 2, out, progress=False)
    buffer = ReplayBuffer.open(out)
    assert summary["complete"] and buffer.n_episodes == 2 and buffer.episode_meta("success").all()
    assert buffer.attrs["task"] == "reach-v3" and buffer.attrs["fps"] == 80
    assert buffer["image"].shape[1:] == (32, 32, 3) and buffer["state"].shape[1:] == (39,)
    assert buffer["action"].shape[1:] == (4,)


def test_collect_train_eval_any_task_by_name(tmp_path):
    store = tmp_path / "reach.zarr"
    overrides = [
        "task=metaworld",
        "task.name=reach-v3",
        "task.n_demos=2",
        f"task.dataset_path={store}",
        "task.env_kwargs.image_size=32",
        "policy.encoder.crop_shape=[28,28]",
        "policy.encoder.feature_dim=8",
        "policy.encoder.num_keypoints=4",
        "policy.denoiser.down_dims=[16,32]",
        "policy.denoiser.diffusion_step_embed_dim=16",
        "policy.horizon=8",
        "policy.n_action_steps=4",
        "training.batch_size=8",
        "training.max_steps=3",
        "training.warmup_steps=1",
        "rollout.every=0",
        "training.val_batches=1",
        "dataset.collect_workers=1",
        "objective=ddpm",
        f"output_root={tmp_path}",
        "name=mw_tiny",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    summary = train.run(cfg, tmp_path / "run", progress=False)  # collects the missing store with the expert first
    buffer = ReplayBuffer.open(store)
    assert buffer.n_episodes == 2 and buffer.episode_meta("success").all() and buffer.attrs["task"] == "reach-v3"
    assert summary["step"] == 3 and summary["stopped_by"] is None

    ckpt = load_checkpoint(summary["latest"])
    task_cfg = checkpoint_config(ckpt)["task"]  # the checkpoint alone names the task, as eval.py uses it
    assert ckpt["build"]["shape_meta"]["obs"]["image"]["shape"] == [32, 32, 3] and task_cfg["name"] == "reach-v3"
    policy = ChunkPolicy.from_checkpoint(summary["latest"], loaded=ckpt)
    results = evaluate(
        policy,
        TaskEnv.from_config({**task_cfg, "max_episode_steps": 20}),
        n_episodes=2,
        n_envs=2,
        seed=100000,
        progress=False,
    )
    assert results["task"] == "actchunk/MetaWorld-reach-v3"
    assert results["n_episodes"] == 2 and results["n_errors"] == 0 and results["sampler"] == "ddim"
    assert results["num_steps"] == 10 and results["nfe"] == 10
    assert [e["seed"] for e in results["episodes"]] == [100000, 100001]
    assert all(1 <= e["length"] <= 20 for e in results["episodes"]) and results["mean_length"] <= 20
    assert (
        0.0 <= results["success_rate"] <= 1.0
        and results["success_ci95"][0] <= results["success_rate"] <= results["success_ci95"][1]
    )
    longest = max(e["length"] for e in results["episodes"])
    assert results["mean_max_reward"] > 0 and results["latency_ms"]["calls"] >= -(-longest // 4)  # both envs per call


def test_camera_pos_moves_the_observation_camera_only():
    moved = MetaWorldEnv("push-v3", image_size=32, camera="corner2", camera_pos=[0.6, 0.295, 0.8])
    plain = MetaWorldEnv("push-v3", image_size=32, camera="corner2")
    try:
        a, _ = moved.reset(seed=3)
        b, _ = plain.reset(seed=3)
        assert np.array_equal(a["state"], b["state"]) and np.abs(a["image"].astype(int) - b["image"]).mean() > 10
    finally:
        moved.close()
        plain.close()
    with pytest.raises(ValueError, match=r"camera_pos=\[1, 2\] needs 3 coordinates"):
        MetaWorldEnv("push-v3", camera="corner2", camera_pos=[1, 2])


def test_every_task_has_a_short_instruction_the_expert_reports():
    assert list(METAWORLD_INSTRUCTIONS) == list(METAWORLD_TASK_NAMES)
    assert all(0 < len(text.split()) <= 12 for text in METAWORLD_INSTRUCTIONS.values())
    assert len(set(METAWORLD_INSTRUCTIONS.values())) == len(METAWORLD_INSTRUCTIONS)
    env = gymnasium.make(metaworld_env_id("push-v3"), include_image=False, disable_env_checker=True)
    expert = make_expert(metaworld_env_id("push-v3"))
    env.reset(seed=0)
    expert.reset(env, np.random.default_rng(0))
    env.close()
    assert expert.instruction == "push the puck to the goal"


def test_multi_task_store_policy_and_per_task_evaluation(tmp_path):
    overrides = [
        "task=metaworld_multi",
        "task.n_demos=1",
        f"task.dataset_path={tmp_path / 'multi.zarr'}",
        "task.env_kwargs.image_size=32",
        "policy.encoder.crop_shape=[28,28]",
        "policy.encoder.feature_dim=8",
        "policy.encoder.num_keypoints=4",
        "policy.denoiser.down_dims=[16,32]",
        "policy.denoiser.diffusion_step_embed_dim=16",
        "policy.horizon=8",
        "policy.n_action_steps=4",
        "training.batch_size=8",
        "training.max_steps=2",
        "training.warmup_steps=1",
        "training.val_batches=1",
        "dataset.collect_workers=1",
        "dataset.val_ratio=0",
        "rollout.every=0",
        "instruction_conditioning=true",
        "text_encoder.dim=16",
        "text_encoder.n_heads=2",
        f"output_root={tmp_path}",
        "name=mw_multi",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.task.tasks = {name: metaworld_env_id(name) for name in ("reach-v3", "push-v3")}
    summary = train.run(cfg, tmp_path / "run", progress=False)  # collects each task, then merges them
    store = ReplayBuffer.open(tmp_path / "multi.zarr")
    assert store.attrs["tasks"] == ["reach-v3", "push-v3"] and store.n_episodes == 2
    assert [str(t) for t in store.episode_meta("instruction")] == [
        METAWORLD_INSTRUCTIONS["reach-v3"],
        METAWORLD_INSTRUCTIONS["push-v3"],
    ]
    ckpt = load_checkpoint(summary["latest"])
    policy = ChunkPolicy.from_checkpoint(summary["latest"], loaded=ckpt)
    assert policy.conditioned and policy.instruction_config["tasks"] == {
        name: METAWORLD_INSTRUCTIONS[name] for name in ("reach-v3", "push-v3")
    }
    task_cfg = {**checkpoint_config(ckpt)["task"], "max_episode_steps": 8}
    eval_cfg = OmegaConf.create({"tasks": "all", "instruction": None})
    targets = eval_script.plan_targets(eval_cfg, task_cfg, policy)
    assert [(name, text) for name, _, text in targets] == [
        ("reach-v3", METAWORLD_INSTRUCTIONS["reach-v3"]),
        ("push-v3", METAWORLD_INSTRUCTIONS["push-v3"]),
    ]
    for name, task, text in targets:
        result = evaluate(
            policy, task, n_episodes=1, n_envs=1, seed=0, instruction=text, guidance_scale=2.0, progress=False
        )
        assert result["task"] == metaworld_env_id(name) and result["instruction"] == text
        assert result["denoiser_batch"] == 2 and result["n_errors"] == 0
    with pytest.raises(ValueError, match="not this checkpoint's"):
        eval_script.plan_targets(OmegaConf.create({"tasks": ["door-open-v3"], "instruction": None}), task_cfg, policy)
    with pytest.raises(ValueError, match="drop instruction="):
        eval_script.plan_targets(OmegaConf.create({"tasks": "all", "instruction": "x"}), task_cfg, policy)
