"""Tests for train.py: resume after an interrupt, checkpoints, logs, config errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from data.collect import collect
from policy.checkpoint import load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.objectives import FlowMatching
from policy.samplers import EulerSampler
from train import run as train

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(tmp: Path, store: Path) -> list[str]:
    """A 32 px PushAround image policy small enough to train a few steps in a second."""
    return [
        "task=push_around",
        "task.env_kwargs.image_size=32",
        f"task.dataset_path={store}",
        "task.n_demos=4",
        "policy.encoder.crop_shape=[28,28]",
        "policy.encoder.feature_dim=8",
        "policy.encoder.num_keypoints=4",
        "policy.denoiser.down_dims=[16,32]",
        "policy.denoiser.diffusion_step_embed_dim=16",
        "policy.horizon=8",
        "policy.n_action_steps=4",
        "training.batch_size=8",
        "training.warmup_steps=2",
        "training.log_every=1",
        "training.val_every=10",
        "training.val_batches=2",
        "training.checkpoint_every=5",
        f"output_root={tmp}",
        "dataset.collect_workers=1",
        "name=tiny",
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "pa.zarr"
    task = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "task" / "push_around.yaml"), resolve=False)
    task["env_kwargs"]["image_size"] = 32
    task["shape_meta"]["obs"]["image"]["shape"] = [32, 32, 3]
    collect(task, 4, path, progress=False)
    return path


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("train", overrides=overrides)


def _run(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_interrupted_run_resumes_to_the_uninterrupted_loss_sequence(tmp_path, store):
    args = [*tiny_overrides(tmp_path, store), "training.max_steps=40"]
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = _run([*args, f"hydra.run.dir={full_dir}"])
    cut = _run([*args, f"hydra.run.dir={cut_dir}"])
    log = cut_dir / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 7):
        assert cut.poll() is None and time.monotonic() < deadline, cut.communicate()[0][-2000:]
        time.sleep(0.05)
    cut.send_signal(signal.SIGINT)
    out, _ = cut.communicate(timeout=120)
    assert cut.returncode == 128 + signal.SIGINT, out[-2000:]
    stopped_at = load_checkpoint(cut_dir / "checkpoints" / "latest.ckpt")["step"]
    assert 7 <= stopped_at < 40 and "stopped by SIGINT" in out
    resumed = _run([*args, f"hydra.run.dir={cut_dir}"])
    out, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out[-2000:]
    assert f"resuming {cut_dir} from step {stopped_at}" in out
    out, _ = full.communicate(timeout=180)
    assert full.returncode == 0, out[-2000:]
    expected, got = _losses(full_dir), _losses(cut_dir)
    assert sorted(got) == list(range(1, 41)) == sorted(expected)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    ckpt = load_checkpoint(cut_dir / "checkpoints" / "latest.ckpt")
    assert ckpt["step"] == 40 and ckpt["ema"] is not None
    for name in ("config.yaml", "loss.png"):
        assert (cut_dir / name).stat().st_size > 0
    assert list((cut_dir / "tb").iterdir())
    policy = ChunkPolicy.from_checkpoint(cut_dir / "checkpoints" / "latest.ckpt")
    assert policy.obs_shapes == {"image": (32, 32, 3), "agent_pos": (2,)}


def test_state_policy_trains_in_process_and_validation_does_not_shift_the_loss(tmp_path, store):
    base = [*tiny_overrides(tmp_path, store), "obs=state", "training.max_steps=6", "ema.enabled=false"]
    a = train(_compose([*base, "training.val_every=1"]), tmp_path / "a", progress=False)
    b = train(_compose([*base, "training.val_every=100"]), tmp_path / "b", progress=False)
    assert a["step"] == b["step"] == 6 and a["stopped_by"] is None
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    policy = ChunkPolicy.from_checkpoint(tmp_path / "a" / "checkpoints" / "latest.ckpt")
    assert policy.obs_shapes == {"state": (6,)}


def test_few_step_policies_train_or_distill_from_one_command_and_round_trip(tmp_path, store):
    base = [*tiny_overrides(tmp_path, store), "obs=state", "training.max_steps=4", "training.val_every=4"]
    teacher = train(_compose([*base, "objective=flow"]), tmp_path / "teacher", progress=False)
    shortcut = train(
        _compose([*base, "objective=shortcut", "objective.max_steps=8"]), tmp_path / "shortcut", progress=False
    )
    policy = ChunkPolicy.from_checkpoint(shortcut["latest"])
    assert policy.objective.kind == "shortcut" and policy.sampler.name == "shortcut"
    assert policy.denoiser.step_embedding is not None
    obs = {"state": torch.randn(2, 2, 6)}
    assert policy.predict_action(obs, num_steps=2)["action"].shape == (2, 4, 2)

    distill = [*base, "objective=consistency", f"teacher={teacher['latest']}", "objective.num_intervals=10"]
    student = train(_compose(distill), tmp_path / "student", progress=False)
    ckpt = load_checkpoint(student["latest"])
    assert ckpt["build"]["policy"] == load_checkpoint(teacher["latest"])["build"]["policy"]
    assert set(ckpt["distiller"]["target"]) == set(ckpt["model"])
    policy = ChunkPolicy.from_checkpoint(student["latest"])  # the student's file alone, no teacher
    assert policy.objective.teacher_objective == FlowMatching() and policy.sampler.name == "consistency"
    for steps in (1, 2):
        assert policy.predict_action(obs, num_steps=steps)["action"].shape == (2, 4, 2)
    with pytest.raises(ValueError, match="valid samplers for consistency: consistency"):
        policy.predict_action(obs, sampler=EulerSampler())
    resumed = train(_compose([*distill, "training.max_steps=6"]), tmp_path / "student", progress=False)
    assert resumed["step"] == 6 and load_checkpoint(resumed["latest"])["distiller"] is not None
    with pytest.raises(
        ValueError, match=r"trained on \{'obs': \{'state'.* the training data here has \{'obs': \{'image'"
    ):
        train(_compose([*distill, "obs=image"]), tmp_path / "image", progress=False)


def test_config_errors_name_the_problem(tmp_path, store):
    with pytest.raises(ConfigCompositionException, match="Available options"):
        _compose(["policy=bogus"])
    with pytest.raises(ConfigCompositionException, match="max_stepz"):
        _compose(["training.max_stepz=3"])
    with pytest.raises(ValueError, match="obs='pixels' is unknown"):
        train(_compose([*tiny_overrides(tmp_path, store), "obs=pixels"]), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match=r"env_kwargs \{'image_size': 32\}, the task config has \{'image_size': 48\}"):
        train(
            _compose([*tiny_overrides(tmp_path, store), "task.env_kwargs.image_size=48"]),
            tmp_path / "y",
            progress=False,
        )
    with pytest.raises(ValueError, match=r"holds 'state' with shape \(6,\) but the task config says \(7,\)"):
        train(
            _compose([*tiny_overrides(tmp_path, store), "obs=state", "task.state_shape_meta.obs.state.shape=[7]"]),
            tmp_path / "z",
            progress=False,
        )


def test_tiny_end_to_end_collect_train_eval(tmp_path):
    store = tmp_path / "auto.zarr"  # missing: train.py collects it with the expert first
    args = [
        *tiny_overrides(tmp_path, store),
        "task.n_demos=3",
        "training.max_steps=50",
        "training.checkpoint_every=50",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    trained = _run(args)
    out, _ = trained.communicate(timeout=180)
    assert trained.returncode == 0, out[-2000:]
    assert "collecting 3 expert episodes first" in out and store.exists()
    ckpt = tmp_path / "run" / "checkpoints" / "latest.ckpt"
    assert load_checkpoint(ckpt)["step"] == 50
    evaluated = subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"checkpoint={ckpt}",
            "n_episodes=2",
            "n_envs=2",
            "n_videos=1",
            f"out_dir={tmp_path / 'eval'}",
            "progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["n_episodes"] == 2 and results["step"] == 50 and results["sampler"] == "euler"
    assert [e["seed"] for e in results["episodes"]] == [100000, 100001]
    assert len(list((tmp_path / "eval" / "videos").glob("episode_0_seed100000_*.mp4"))) == 1


def test_nan_in_stored_actions_is_refused_before_training(tmp_path, store):
    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    actions = zarr.open_group(str(bad), mode="r+")["data/action"]
    actions[5] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf in 'action' at step 5"):
        train(_compose([*tiny_overrides(tmp_path, bad)]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # a run that fails before its first step leaves no directory


def test_cli_names_an_unknown_key_with_the_valid_ones():
    done = subprocess.run(
        [sys.executable, "train.py", "training.max_stepz=3"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "train.py: error: unknown option 'training.max_stepz'; valid options under training: max_steps, batch_size"
        )
    )


def test_a_second_training_into_a_run_dir_in_use_fails_in_one_line(tmp_path, store):
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(tmp_path, store), "obs=state", "training.max_steps=100000"]
    first = _run([*args, f"hydra.run.dir={run_dir}"])
    log = run_dir / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-2000:]
        time.sleep(0.05)
    try:
        with pytest.raises(ValueError) as caught:  # train.py prints it as one line: "train.py: error: <message>"
            train(_compose([*args, "training.max_steps=8"]), run_dir, progress=False)
    finally:
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=120)
    assert str(caught.value) == (
        f"run dir {run_dir} is in use by PID {first.pid} (another training holds {run_dir / '.lock'}); "
        "wait for it to finish or pass another hydra.run.dir"
    )
    assert first.returncode == 128 + signal.SIGINT, out[-2000:]
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == sorted(set(steps))  # one writer: every step logged once
    assert load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["step"] == steps[-1]


def test_resume_refuses_another_objective_or_architecture_and_allows_a_longer_run(tmp_path, store):
    base = [*tiny_overrides(tmp_path, store), "obs=state", "training.max_steps=3"]
    run_dir = tmp_path / "run"
    train(_compose(base), run_dir, progress=False)
    latest = run_dir / "checkpoints" / "latest.ckpt"
    before = latest.read_bytes()
    with pytest.raises(
        ValueError,
        match=r"holds a run trained with another config \(.*objective\._target_: "
        r"'policy.objectives.FlowMatching' -> 'policy.objectives.DDPM'",
    ):
        train(_compose([*base, "objective=ddpm"]), run_dir, progress=False)
    with pytest.raises(
        ValueError,
        match=r"policy.denoiser.down_dims: \[16, 32\] -> \[8, 16\]\); resuming may change "
        r"only training.max_steps",
    ):
        train(_compose([*base, "policy.denoiser.down_dims=[8,16]"]), run_dir, progress=False)
    assert latest.read_bytes() == before and "FlowMatching" in (run_dir / "config.yaml").read_text()
    stale = run_dir / "checkpoints" / ".latest.tmp-4242-0123abcd.ckpt"
    stale.write_bytes(b"left by a killed writer")
    summary = train(_compose([*base, "training.max_steps=5", "training.log_every=2"]), run_dir, progress=False)
    assert summary["step"] == 5 and load_checkpoint(latest)["step"] == 5 and not stale.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.checkpoint_every=0", "training.checkpoint_every=0 must be an integer >= 1"),
        ("training.val_every=0", "training.val_every=0 must be an integer >= 1"),
        ("training.log_every=0", "training.log_every=0 must be an integer >= 1"),
        ("device=gpu", "device='gpu' is not a torch device; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_settings_fail_before_the_store_is_opened_and_leave_no_run_dir(tmp_path, override, message):
    missing = tmp_path / "never_collected.zarr"
    run_dir = tmp_path / "2024-01-01" / "12-00-00_tiny"  # hydra's <output_root>/<date>/<time>_<name>
    (run_dir / ".hydra").mkdir(parents=True)  # what hydra writes before train.py's code runs
    (run_dir / "train.log").write_text("")
    with pytest.raises(ValueError, match=re.escape(message)):
        train(_compose([*tiny_overrides(tmp_path, missing), override]), run_dir, progress=False)
    assert not missing.exists() and not run_dir.parent.exists() and tmp_path.exists()


def test_instruction_conditioned_training_resumes_and_distills_with_its_instructions(tmp_path, store):
    base = [
        *tiny_overrides(tmp_path, store),
        "obs=state",
        "training.max_steps=3",
        "instruction_conditioning=true",
        "text_encoder.dim=16",
        "text_encoder.n_heads=2",
        "cfg.p_uncond=0.5",
    ]
    run_dir = tmp_path / "run"
    summary = train(_compose(base), run_dir, progress=False)
    ckpt = load_checkpoint(summary["latest"])
    entry = ckpt["build"]["policy"]["instruction"]
    assert entry["p_uncond"] == 0.5 and entry["text_encoder"]["vocabulary"] == [
        "around", "end", "go", "left", "of", "right", "the", "wall",
    ]  # fmt: skip
    assert list(entry["tasks"]) == ["push_around"]  # {task: its first episode's instruction}, for per-task eval
    assert "instruction" not in OmegaConf.load(run_dir / "config.yaml").policy  # the run's config stays the user's
    policy = ChunkPolicy.from_checkpoint(summary["latest"])
    out = policy.predict_action({"state": torch.zeros(1, 2, 6)}, instruction="go around the left end of the wall")
    assert out["action"].shape == (1, 4, 2)
    resumed = train(_compose([*base, "training.max_steps=4"]), run_dir, progress=False)  # same store, same vocabulary
    assert resumed["step"] == 4
    distilled = train(
        _compose([*base, "objective=consistency", f"teacher={summary['latest']}", "name=tiny_cd"]),
        tmp_path / "cd",
        progress=False,
    )
    student = ChunkPolicy.from_checkpoint(distilled["latest"])
    assert student.conditioned and student.sampler.name == "consistency"
    student.predict_action(
        {"state": torch.zeros(2, 2, 6)}, instruction="go around the right end of the wall", guidance_scale=2.0
    )


def test_instruction_conditioning_on_a_store_without_instructions_is_refused(tmp_path):
    from data.replay_buffer import ReplayBuffer

    legacy = tmp_path / "legacy.zarr"
    buffer = ReplayBuffer.create(legacy, attrs={"task": "push_around"})
    for _ in range(2):
        buffer.add_episode({"state": np.zeros((20, 6), np.float32), "action": np.zeros((20, 2), np.float32)})
    buffer.close()
    with pytest.raises(ValueError, match="has none: re-collect it with python -m data.collect"):
        train(
            _compose([*tiny_overrides(tmp_path, legacy), "obs=state", "instruction_conditioning=true"]), tmp_path / "r"
        )


def test_training_rollouts_ask_a_conditioned_policy_its_tasks_instruction_or_its_unconditional_model():
    from types import SimpleNamespace

    from policy.training import rollout_instruction

    multi = OmegaConf.create({"task": {"tasks": {"reach-v3": "env/reach", "push-v3": "env/push"}}})
    single = OmegaConf.create({"task": {"name": "pick_place"}})
    tasks = {"reach-v3": "reach the goal", "push-v3": "push the puck"}
    conditioned = SimpleNamespace(conditioned=True, instruction_config={"tasks": tasks})
    assert rollout_instruction(conditioned, SimpleNamespace(env_id="env/push"), multi) == ("push the puck", 1.0)
    assert rollout_instruction(conditioned, SimpleNamespace(env_id="env/other"), multi) == (None, 0.0)
    several = SimpleNamespace(conditioned=True, instruction_config={"tasks": {}})  # one task, several instructions
    assert rollout_instruction(several, SimpleNamespace(env_id="env/pick"), single) == (None, 0.0)
    plain = SimpleNamespace(conditioned=False, instruction_config=None)
    assert rollout_instruction(plain, SimpleNamespace(env_id="env/pick"), single) == (None, 1.0)
