"""Tests for benchmarks/bench_metaworld.py: a tiny run on one task, its report, --reuse and bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bench_metaworld
from data.replay_buffer import ReplayBuffer
from policy.checkpoint import checkpoint_config, load_checkpoint

TINY = [
    "--tasks",
    "reach-v3",
    "--objectives",
    "flow",
    "--demos",
    "2",
    "--train-steps",
    "2",
    "--batch-size",
    "8",
    "--episodes",
    "2",
    "--n-envs",
    "1",
    "--max-episode-steps",
    "8",
    "--image-size",
    "32",
    "--crop-size",
    "28",
    "policy.denoiser.down_dims=[16,32]",
    "policy.denoiser.diffusion_step_embed_dim=16",
    "policy.horizon=8",
    "policy.n_action_steps=4",
    "policy.encoder.feature_dim=8",
    "policy.encoder.num_keypoints=4",
    "training.warmup_steps=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    argv = [*TINY, "--work-dir", str(tmp / "work"), "--out", str(tmp / "results")]
    payload = bench_metaworld.run_benchmark(bench_metaworld.parse_args(argv), progress=False)
    return {"tmp": tmp, "argv": argv, "payload": payload}


def test_run_writes_json_and_table_with_every_field(run):
    saved = json.loads((run["tmp"] / "results" / "metaworld.json").read_text())
    (row,) = saved["rows"]
    assert (row["task"], row["objective"], row["sampler"], row["sampler_steps"]) == ("reach-v3", "flow", "euler", 10)
    assert row["train_steps"] == row["train_timed_steps"] == 2 and row["train_wall_time_s"] > 0
    assert row["n_episodes"] == 2 and [e["seed"] for e in row["episodes"]] == [100000, 100001]
    assert all(e["length"] <= 8 for e in row["episodes"]) and row["eval_wall_time_s"] > 0
    low, high = row["success_ci95"]
    assert low <= row["success_rate"] <= high and row["mean_max_reward"] > 0
    assert (
        saved["collection"]["reach-v3"]["episodes"] == 2
        and saved["collection"]["reach-v3"]["expert_success_rate"] == 1.0
    )
    assert saved["averages"] == [
        {
            "objective": "flow",
            "n_tasks": 1,
            "success_rate": row["success_rate"],
            "mean_max_reward": row["mean_max_reward"],
            "train_wall_time_s": row["train_wall_time_s"],
            "eval_wall_time_s": row["eval_wall_time_s"],
        }
    ]
    table = (run["tmp"] / "results" / "metaworld.md").read_text()
    assert "| reach-v3 | easy | flow | euler-10 |" in table and "hard 9.0%" in table and "--train-steps 2" in table
    assert "Partial" not in table
    assert saved["protocol"]["amp"] is bench_metaworld.autocast_enabled(
        "auto", torch.device("cpu")
    )  # resolved, not "auto"


def test_demos_are_collected_with_metaworlds_horizon_and_all_train(run):

    store = ReplayBuffer.open(run["tmp"] / "work" / "reach-v3" / "demos_32px.zarr")
    assert store.n_episodes == 2 and store.episode_meta("success").all()  # 8 steps would be too short for the expert
    config = checkpoint_config(load_checkpoint(run["payload"]["rows"][0]["checkpoint"]))
    assert config["task"]["max_episode_steps"] == 8 and config["dataset"]["val_ratio"] == 0


def test_rerun_needs_reuse_and_reuse_keeps_model_and_evaluation(run):
    with pytest.raises(bench_metaworld.BenchmarkError, match="--reuse"):
        bench_metaworld.run_benchmark(bench_metaworld.parse_args(run["argv"]), progress=False)
    checkpoint = Path(run["payload"]["rows"][0]["checkpoint"])
    mtime = checkpoint.stat().st_mtime_ns
    again = bench_metaworld.run_benchmark(bench_metaworld.parse_args([*run["argv"], "--reuse"]), progress=False)
    assert checkpoint.stat().st_mtime_ns == mtime
    assert again["rows"] == run["payload"]["rows"]


def test_reuse_refuses_a_run_dir_with_another_model(run):
    argv = [*run["argv"], "--reuse", "--batch-size", "4"]
    with pytest.raises(bench_metaworld.BenchmarkError, match="training"):
        bench_metaworld.run_benchmark(bench_metaworld.parse_args(argv), progress=False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "reach-v2"], "unknown MetaWorld tasks"),
        (["--image-size", "84", "--crop-size", "84"], "--crop-size 84"),
        (["--episodes", "0"], "must be >= 1"),
        (["--amp", "yes"], "invalid choice: 'yes'"),
    ],
)
def test_bad_arguments_are_refused(args, message, capsys):
    with pytest.raises(SystemExit):
        bench_metaworld.parse_args(args)
    assert message in capsys.readouterr().err
