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
    *("--tasks", "reach-v3", "--objectives", "flow", "--seeds", "0", "1", "--demos", "2"),
    *("--train-steps", "4", "--eval-every", "2", "--top-k", "1", "--batch-size", "8", "--episodes", "2"),
    *("--n-envs", "1", "--max-episode-steps", "8", "--image-size", "32", "--crop-size", "28"),
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


def test_run_evaluates_during_training_and_scores_the_best_k_and_the_final_checkpoint(run):
    saved = json.loads((run["tmp"] / "results" / "metaworld.json").read_text())
    assert [(m["task"], m["objective"], m["seed"]) for m in saved["models"]] == [
        ("reach-v3", "flow", 0),
        ("reach-v3", "flow", 1),
    ]
    for model in saved["models"]:
        evals = model["evaluations"]
        assert [e["step"] for e in evals] == [2, 4] and model["n_evaluations"] == 2 and model["steps"] == 4
        assert 0 < evals[0]["train_time_s"] < evals[1]["train_time_s"] <= model["train_time_s"]
        successes = [e["success_rate"] for e in evals]
        assert model["top_k_success"] == max(successes) and model["final_success"] == successes[-1]
        assert model["sampler"] == "EulerSampler"
    (row,) = saved["rows"]
    assert row["seeds"] == [0, 1] and row["group"] == "easy" and row["dp3_diffusion_policy"] == 0.18
    tops = [m["top_k_success"] for m in saved["models"]]
    assert row["top_k_success"] == pytest.approx(sum(tops) / 2)
    assert row["gap_to_dp3"] == pytest.approx(row["top_k_success"] - 0.18)
    assert saved["averages"][0]["n_tasks"] == 1 and saved["averages"][0]["dp3_diffusion_policy"] == 0.18
    assert saved["collection"]["reach-v3"]["episodes"] == 2
    assert saved["protocol"]["amp"] is bench_metaworld.autocast_enabled("auto", torch.device("cpu"))
    table = (run["tmp"] / "results" / "metaworld.md").read_text()
    assert "| reach-v3 | easy | flow | 2 |" in table and "0.18 ± 0.02" in table and "--train-steps 4" in table
    assert "Partial" not in table and "hard 9.0%" in table
    assert saved["protocol"]["obs_shapes"] == {"image": [32, 32, 3], "agent_pos": [4]}
    assert "2 expert demos per task, `image` (32 px, crop 28) + `agent_pos` (4-d); UNet" in table
    assert (run["tmp"] / "results" / "metaworld_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demos_are_collected_with_metaworlds_horizon_and_all_train(run):
    store = ReplayBuffer.open(run["tmp"] / "work" / "reach-v3" / "demos_32px.zarr")
    assert store.n_episodes == 2 and store.episode_meta("success").all()  # 8 steps would be too short for the expert
    config = checkpoint_config(load_checkpoint(run["payload"]["models"][0]["checkpoint"]))
    assert config["task"]["max_episode_steps"] == 8 and config["dataset"]["val_ratio"] == 0
    assert config["rollout"]["n_episodes"] == 2 and config["rollout"]["every"] == 2


def test_rerun_needs_reuse_and_reuse_keeps_models_and_evaluations(run):
    with pytest.raises(bench_metaworld.BenchmarkError, match="--reuse"):
        bench_metaworld.run_benchmark(bench_metaworld.parse_args(run["argv"]), progress=False)
    checkpoint = Path(run["payload"]["models"][0]["checkpoint"])
    mtime = checkpoint.stat().st_mtime_ns
    again = bench_metaworld.run_benchmark(bench_metaworld.parse_args([*run["argv"], "--reuse"]), progress=False)
    assert checkpoint.stat().st_mtime_ns == mtime
    assert [m["evaluations"] for m in again["models"]] == [m["evaluations"] for m in run["payload"]["models"]]


def test_reuse_refuses_a_run_dir_with_another_model_or_other_evaluations(run):
    with pytest.raises(bench_metaworld.BenchmarkError, match="training"):
        bench_metaworld.run_benchmark(bench_metaworld.parse_args([*run["argv"], "--reuse", "--batch-size", "4"]))
    with pytest.raises(bench_metaworld.BenchmarkError, match="rollout"):
        bench_metaworld.run_benchmark(bench_metaworld.parse_args([*run["argv"], "--reuse", "--episodes", "3"]))


def test_report_only_tables_the_finished_models_lists_the_pending_ones_and_trains_nothing(run, tmp_path):
    seeds = run["argv"].index("--seeds")
    argv = [*run["argv"][: seeds + 1], "0", "1", "2", *run["argv"][seeds + 3 :]]  # seed 2 never trained
    argv[argv.index("--out") + 1] = str(tmp_path)
    checkpoint = Path(run["payload"]["models"][0]["checkpoint"])
    mtime = checkpoint.stat().st_mtime_ns
    payload = bench_metaworld.run_benchmark(bench_metaworld.parse_args([*argv, "--report-only"]), progress=False)
    assert [m["seed"] for m in payload["models"]] == [0, 1] and payload["pending"] == ["reach-v3 flow seed 2"]
    assert not (run["tmp"] / "work" / "reach-v3" / "flow_seed2").exists() and checkpoint.stat().st_mtime_ns == mtime
    table = (tmp_path / "metaworld.md").read_text()
    assert "Partial: 2 of 3 models finished; pending: seed 2 of reach-v3 flow." in table
    with pytest.raises(bench_metaworld.BenchmarkError, match="no finished model"):
        bench_metaworld.run_benchmark(
            bench_metaworld.parse_args([*argv, "--report-only", "--objectives", "ddpm"]), progress=False
        )
    argv[seeds + 1 : seeds + 4] = ["0"]  # seed 1 was trained too: the report finds it, and nothing is pending
    payload = bench_metaworld.run_benchmark(bench_metaworld.parse_args([*argv, "--report-only"]), progress=False)
    assert [m["seed"] for m in payload["models"]] == [0, 1] and payload["pending"] == []
    assert "Partial" not in (tmp_path / "metaworld.md").read_text()


def test_a_tag_names_the_result_files_and_the_caption_names_the_cpu(run, tmp_path):
    argv = [*run["argv"], "--report-only", "--tag", "variant"]
    argv[argv.index("--out") + 1] = str(tmp_path)
    payload = bench_metaworld.run_benchmark(bench_metaworld.parse_args(argv), progress=False)
    assert payload["stem"] == "metaworld_variant" and not (tmp_path / "metaworld.md").exists()
    assert json.loads((tmp_path / "metaworld_variant.json").read_text())["stem"] == "metaworld_variant"
    table = (tmp_path / "metaworld_variant.md").read_text()
    assert "metaworld_variant_curves.png" in table and (tmp_path / "metaworld_variant_curves.png").exists()
    assert f"CPU ({payload['machine']['cpu']}, " in table and payload["machine"]["cpus"] >= 1


def test_the_caption_names_what_the_models_observe(run):
    payload = json.loads(json.dumps(run["payload"]))
    payload["protocol"]["obs_shapes"] = {"state": [39]}  # a run with the override obs=state
    caption = bench_metaworld.markdown_report(payload).splitlines()[0]
    assert "2 expert demos per task, `state` (39-d); UNet" in caption and "px" not in caption
    del payload["protocol"]["obs_shapes"]  # a table written before the protocol recorded it: the image models
    assert "`image` (32 px, crop 28) + `agent_pos` (4-d); UNet" in bench_metaworld.markdown_report(payload)


def test_steps_and_evaluation_interval_default_to_the_recipe(tmp_path):
    args = bench_metaworld.parse_args(["--tasks", "reach-v3"])
    assert args.train_steps is None and args.eval_every is None
    overrides = bench_metaworld.train_overrides("reach-v3", "flow", 0, args, tmp_path / "demos.zarr")
    cfg = bench_metaworld.compose_train_config(overrides)
    recipe = bench_metaworld.compose_train_config(["task=metaworld"])
    assert cfg.training.max_steps == recipe.training.max_steps and cfg.rollout.every == recipe.rollout.every
    given = bench_metaworld.parse_args(["--tasks", "reach-v3", "--train-steps", "40", "--eval-every", "20"])
    cfg = bench_metaworld.compose_train_config(bench_metaworld.train_overrides("reach-v3", "flow", 0, given, tmp_path))
    assert (cfg.training.max_steps, cfg.rollout.every) == (40, 20)


def test_top_k_mean_is_dp3s_score():
    assert bench_metaworld.top_k_mean([0.1, 0.9, 0.5, 0.7], 2) == pytest.approx(0.8)
    assert bench_metaworld.top_k_mean([0.4], 5) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "reach-v2"], "unknown MetaWorld tasks"),
        (["--image-size", "84", "--crop-size", "84"], "--crop-size 84"),
        (["--episodes", "0"], "must be >= 1"),
        (["--eval-every", "0"], "must be >= 1"),
        (["--amp", "yes"], "invalid choice: 'yes'"),
        (["--tag", "../x"], "--tag '../x' must be"),
    ],
)
def test_bad_arguments_are_refused(args, message, capsys):
    with pytest.raises(SystemExit):
        bench_metaworld.parse_args(args)
    assert message in capsys.readouterr().err


def test_reuse_ignores_options_added_later_at_their_neutral_value():
    from training_runs import _without_new_neutral

    stored = {"expert": {"noise_std": 0.0}, "name": "a"}
    assert _without_new_neutral({"expert": {"noise_std": 0.0, "steps_after_success": 0}, "name": "a"}, stored) == stored
    changed = {"expert": {"noise_std": 0.0, "steps_after_success": 10}, "name": "a"}
    assert _without_new_neutral(changed, stored) == changed  # a new option that changes behaviour still differs


def test_pending_summary_groups_models_by_their_missing_seeds():
    pending = ["a-v3 flow seed 1", "a-v3 flow seed 2", "b-v3 ddpm seed 0", "c-v3 flow seed 1", "c-v3 flow seed 2"]
    summary = bench_metaworld.pending_summary(pending)
    assert summary == "seeds 1, 2 of a-v3 flow, c-v3 flow; seed 0 of b-v3 ddpm"
    assert bench_metaworld.pending_summary([]) == ""
