"""Tests for benchmarks/bench_push_t.py: a tiny run of both observation sets, its report, --reuse, bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench_push_t
from configs import compose_config
from policy.checkpoint import checkpoint_config, load_checkpoint

TINY = [
    *("--obs", "state", "image", "--objectives", "flow", "--seeds", "0", "--demos", "2"),
    *("--train-steps", "4", "--eval-every", "2", "--curve-episodes", "2", "--episodes", "3", "--n-envs", "1"),
    *("--ablate-n-action-steps", "2"),
    "--max-episode-steps",
    "6",
    "task.env_kwargs.image_size=32",
    "policy.encoder.crop_shape=[28,28]",
    "policy.denoiser.down_dims=[16,32]",
    "policy.denoiser.diffusion_step_embed_dim=16",
    "policy.horizon=8",
    "policy.n_action_steps=4",
    "policy.encoder.feature_dim=8",
    "policy.encoder.num_keypoints=4",
    "training.batch_size=8",
    "training.warmup_steps=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    argv = [*TINY, "--work-dir", str(tmp / "work"), "--out", str(tmp / "results")]
    payload = bench_push_t.run_benchmark(bench_push_t.parse_args(argv), progress=False)
    return {"tmp": tmp, "argv": argv, "payload": payload}


def test_run_scores_the_final_checkpoint_with_diffusion_policys_normalized_coverage(run):
    saved = json.loads((run["tmp"] / "results" / "push_t.json").read_text())
    assert [(m["obs"], m["objective"], m["seed"]) for m in saved["models"]] == [
        ("state", "flow", 0),
        ("image", "flow", 0),
    ]
    for model in saved["models"]:
        assert [e["step"] for e in model["evaluations"]] == [2, 4] and model["steps"] == 4
        final = json.loads((Path(model["checkpoint"]).parents[1] / "final_eval_n4.json").read_text())
        assert final["n_episodes"] == 3 and [e["seed"] for e in final["episodes"]] == [100000, 100001, 100002]
        scores = [min(e["max_reward"] / 0.95, 1.0) for e in final["episodes"]]
        assert model["normalized_score"] == pytest.approx(sum(scores) / 3)
        assert sorted(model["n_action_steps_ablation"]) == ["2", "4"]  # JSON keys
        assert model["n_action_steps_ablation"]["4"]["normalized_score"] == model["normalized_score"]
        assert model["best_curve_score"] == max(e["normalized_score"] for e in model["evaluations"])
    state, image = saved["rows"]
    assert state["goal_gaps"]["success_rate"] == pytest.approx(state["success_rate"] - 0.80)
    assert state["goal_gaps"]["normalized_score"] == pytest.approx(state["normalized_score"] - 0.90)
    assert list(image["goal_gaps"]) == ["normalized_score"] and image["diffusion_policy_score"] == 0.84
    table = (run["tmp"] / "results" / "push_t.md").read_text()
    assert "| state | flow | 0 | 2 |" in table  # the ablation row
    assert "| state | flow | 1 |" in table and "| image | flow | 1 |" in table and "--train-steps 4" in table
    assert (run["tmp"] / "results" / "push_t_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_train_with_the_recipe_of_their_observation_set(run):
    state, image = (checkpoint_config(load_checkpoint(m["checkpoint"])) for m in run["payload"]["models"])
    assert state["obs"] == "state" and image["obs"] == "image"
    assert state["training"]["lr"] == image["training"]["lr"] == 5e-4
    assert "fp32" in run["payload"]["recipes"]["state"]  # amp=auto: low-dim policies train in fp32 on CPU
    assert state["task"]["n_demos"] == 2 and state["rollout"]["n_episodes"] == 2


def test_reuse_keeps_models_and_final_evaluations(run):
    with pytest.raises(bench_push_t.BenchmarkError, match="--reuse"):
        bench_push_t.run_benchmark(bench_push_t.parse_args(run["argv"]), progress=False)
    evals = [
        Path(m["checkpoint"]).parents[1] / f"final_eval_n{n}.json" for m in run["payload"]["models"] for n in (2, 4)
    ]
    mtimes = [p.stat().st_mtime_ns for p in evals]
    again = bench_push_t.run_benchmark(bench_push_t.parse_args([*run["argv"], "--reuse"]), progress=False)
    assert [p.stat().st_mtime_ns for p in evals] == mtimes
    assert [m["normalized_score"] for m in again["models"]] == [m["normalized_score"] for m in run["payload"]["models"]]
    tagged = bench_push_t.parse_args([*run["argv"], "--reuse", "--tag", "b8"])
    assert bench_push_t.run_benchmark(tagged, progress=False)["stem"] == "push_t_b8"
    results = run["tmp"] / "results"
    assert (results / "push_t_b8.json").exists() and (results / "push_t_b8_curves.png").exists()
    assert "push_t_b8_curves.png" in (results / "push_t_b8.md").read_text()


def test_recipes_compose_for_train_py():
    state = compose_config("train", ["+experiment=push_t_state"])
    image = compose_config("train", ["+experiment=push_t_image"])
    assert state.task.name == image.task.name == "push_t" and (state.obs, image.obs) == ("state", "image")


@pytest.mark.parametrize(
    "args, message",
    [(["--episodes", "0"], "must be >= 1"), (["--obs", "rgb"], "invalid choice"), (["--tag", "../x"], "--tag")],
)
def test_bad_arguments_are_refused(args, message, capsys):
    with pytest.raises(SystemExit):
        bench_push_t.parse_args(args)
    assert message in capsys.readouterr().err
