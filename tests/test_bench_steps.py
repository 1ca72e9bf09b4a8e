"""Tests for benchmarks/bench_steps.py: a tiny end-to-end study, cell planning, seed aggregation, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import bench_steps
from data.collect import collect

ROOT = Path(__file__).resolve().parents[1]

STEP_COUNTS = (1, 2)
TINY = [
    "task.max_episode_steps=12",
    "policy.denoiser.down_dims=[16,32]",
    "policy.denoiser.diffusion_step_embed_dim=16",
    "policy.horizon=8",
    "policy.n_action_steps=4",
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.val_every=100",
    "training.val_batches=1",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("study")
    task = yaml.safe_load((ROOT / "configs" / "task" / "pick_place.yaml").read_text())
    collect(task, 2, tmp / "pp.zarr", progress=False)  # full-length expert episodes; evaluation episodes are cut short
    kwargs = dict(
        train_steps=3,
        seeds=[0],
        episodes=2,
        out=tmp / "results",
        work_dir=tmp / "work",
        step_counts=STEP_COUNTS,
        extra_overrides=[*TINY, f"task.dataset_path={tmp / 'pp.zarr'}"],
        eval_every=2,
        curve_episodes=1,
        distill_steps=2,
        progress=False,
    )
    payload = bench_steps.run_study("pick_place", **kwargs)
    return {"tmp": tmp, "kwargs": kwargs, "payload": payload}


def test_study_writes_json_table_and_plot(study):
    out = study["tmp"] / "results"
    saved = json.loads((out / "steps_pick_place.json").read_text())
    rows = {(r["objective"], r["sampler"], r["num_steps"]): r for r in saved["rows"]}
    expected = {("ddpm", "ddpm", 100)} | {
        (o, s, n) for o, names in bench_steps.SAMPLERS.items() for s in names for n in STEP_COUNTS
    }
    assert set(rows) == expected
    assert rows[("flow", "heun", 2)]["nfe"] == 4 and rows[("flow", "midpoint", 1)]["nfe"] == 2
    assert rows[("flow", "euler", 2)]["nfe"] == 2 and rows[("ddpm", "ddpm", 100)]["nfe"] == 100
    assert rows[("shortcut", "shortcut", 2)]["nfe"] == 2 and rows[("consistency", "consistency", 1)]["nfe"] == 1
    assert all(r["n_episodes"] == 2 and r["latency_ms_median"] > 0 for r in rows.values())
    table = (out / "steps_pick_place.md").read_text()
    assert table.count("\n| ddpm |") == 5 and table.count("\n| flow |") == 6 and "±" not in table
    assert table.count("\n| shortcut |") == 2 and table.count("\n| consistency |") == 2
    assert "the consistency model distilled from the flow model of its seed for 2 steps" in table
    assert "| flow | heun | 2 | 4 |" in table
    assert (out / "steps_pick_place.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_model_keeps_a_learning_curve_against_training_time(study):
    for run in study["payload"]["runs"]:
        curve = run["learning_curve"]
        expected = [2] if run["objective"] == "consistency" else [2, 3]  # every 2 steps and at the last one
        assert [e["step"] for e in curve] == expected
        times = [e["train_time_s"] for e in curve]
        assert 0 < times[0] and times == sorted(set(times)) and all(0 <= e["success_rate"] <= 1 for e in curve)
    png = study["tmp"] / "results" / "steps_pick_place_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cells_of_an_objective_share_episode_seeds(study):
    for run in study["payload"]["runs"]:
        seeds = [[e["seed"] for e in cell["episodes"]] for cell in run["cells"]]
        assert seeds[0] == [100000, 100001]
        assert all(s == seeds[0] for s in seeds)
    runs = {run["objective"]: run for run in study["payload"]["runs"]}
    ddpm_cfg = bench_steps.checkpoint_config(bench_steps.load_checkpoint(runs["ddpm"]["checkpoint"]))
    flow_cfg = bench_steps.checkpoint_config(bench_steps.load_checkpoint(runs["flow"]["checkpoint"]))
    for key in ("policy", "training", "task", "seed", "obs", "dataset"):
        assert ddpm_cfg[key] == flow_cfg[key]
    assert ddpm_cfg["objective"]["_target_"].endswith("DDPM") and flow_cfg["objective"]["_target_"].endswith(
        "FlowMatching"
    )


def test_consistency_model_is_distilled_from_the_flow_model_of_its_seed(study):
    runs = {run["objective"]: run for run in study["payload"]["runs"]}
    student = bench_steps.load_checkpoint(runs["consistency"]["checkpoint"])
    assert student["step"] == 2 and Path(runs["consistency"]["checkpoint"]).parts[-3] == "consistency-flow_seed0_2steps"
    assert bench_steps.checkpoint_config(student)["teacher"] == runs["flow"]["checkpoint"]
    assert student["build"]["policy"] == bench_steps.load_checkpoint(runs["flow"]["checkpoint"])["build"]["policy"]
    with pytest.raises(bench_steps.BenchmarkError, match="add flow to --objectives"):
        bench_steps.run_study("pick_place", **{**study["kwargs"], "objectives": ["ddpm", "consistency"]})


def test_rerun_needs_reuse_and_reuse_keeps_models_and_cells(study):
    with pytest.raises(bench_steps.BenchmarkError, match="--reuse"):
        bench_steps.run_study("pick_place", **study["kwargs"])
    ckpt = Path(study["payload"]["runs"][0]["checkpoint"])
    mtime = ckpt.stat().st_mtime_ns
    again = bench_steps.run_study("pick_place", **study["kwargs"], reuse=True, tag="again")
    assert ckpt.stat().st_mtime_ns == mtime
    assert again["rows"] == study["payload"]["rows"]
    out = study["tmp"] / "results"
    assert again["files"] == "steps_pick_place_again.{json,md,png}"
    assert all((out / f"steps_pick_place_again.{ext}").exists() for ext in ("json", "md", "png"))


def test_reuse_refuses_a_run_dir_with_another_model(study):
    kwargs = {
        **study["kwargs"],
        "extra_overrides": [*study["kwargs"]["extra_overrides"], "policy.denoiser.kernel_size=3"],
    }
    with pytest.raises(bench_steps.BenchmarkError, match="policy"):
        bench_steps.run_study("pick_place", **kwargs, reuse=True)


def test_planned_cells():
    assert bench_steps.planned_cells("ddpm", [1, 4]) == [
        ("ddpm", None),
        ("ddim", 1),
        ("ddim", 4),
        ("dpmsolver", 1),
        ("dpmsolver", 4),
    ]
    assert [s for s, _ in bench_steps.planned_cells("flow", [8])] == ["euler", "midpoint", "heun"]
    assert bench_steps.planned_cells("ddpm", [2], full_chain=False) == [("ddim", 2), ("dpmsolver", 2)]
    cells = bench_steps.planned_cells("ddpm", [1, 4])
    assert sorted(cells, key=bench_steps.evaluation_rank) == [
        ("ddim", 1),
        ("dpmsolver", 1),
        ("ddim", 4),
        ("dpmsolver", 4),
        ("ddpm", None),
    ]
    with pytest.raises(bench_steps.BenchmarkError, match="objective"):
        bench_steps.planned_cells("vp", [1])


def _cell(successes: list[bool], reward: float, latency: float) -> dict:
    return {
        "sampler": "euler",
        "num_steps": 4,
        "nfe": 4,
        "n_episodes": len(successes),
        "success_rate": sum(successes) / len(successes),
        "mean_max_reward": reward,
        "episodes": [{"success": s} for s in successes],
        "latency_ms": {"median": latency, "p90": 2 * latency},
        "actions_per_s": 100.0,
    }


def test_aggregate_over_seeds_reports_mean_spread_and_pooled_interval():
    runs = [
        {"objective": "flow", "cells": [_cell([True, True, False, False], 0.5, 10.0)]},
        {"objective": "flow", "cells": [_cell([True, True, True, True], 0.9, 30.0)]},
    ]
    (row,) = bench_steps.aggregate(runs)
    assert row["n_seeds"] == 2 and row["n_episodes"] == 8
    assert row["success_rate"] == pytest.approx(0.75) and row["success_sd"] == pytest.approx(0.3535534, rel=1e-6)
    assert row["success_ci95_pooled"] == pytest.approx(list(bench_steps.wilson_interval(6, 8)))
    assert row["mean_max_reward"] == pytest.approx(0.7) and row["latency_ms_median"] == pytest.approx(20.0)
    table = bench_steps.markdown_table([row], "caption")
    assert "| flow | euler | 4 | 4 | 0.75 ± 0.35 (" in table and "0.700 ± 0.283" in table


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(bench_steps.BenchmarkError, match="must be >= 1"):
        bench_steps.run_study("pick_place", train_steps=0, seeds=[0], episodes=2, out=tmp_path, work_dir=tmp_path)


def test_study_label_is_the_tasks_own_name_after_overrides():
    assert bench_steps.study_label("push_t", []) == "push_t"
    assert bench_steps.study_label("metaworld", ["task.name=reach-v3"]) == "reach-v3"
    assert bench_steps.study_label("metaworld", ["+experiment=metaworld", "task.name=drawer-open-v3"]) == (
        "drawer-open-v3"
    )


def test_plot_adds_a_score_panel_for_tasks_with_a_normalized_score(tmp_path):
    from PIL import Image

    runs = [{"objective": "flow", "cells": [_cell([True, False], 0.5, 10.0)]}]
    rows = bench_steps.aggregate(runs)
    bench_steps.plot(rows, "plain", tmp_path / "plain.png")
    scored = [{**r, "normalized_score": 0.6} for r in rows]
    bench_steps.plot(scored, "scored", tmp_path / "scored.png")
    plain_w, scored_w = Image.open(tmp_path / "plain.png").width, Image.open(tmp_path / "scored.png").width
    assert scored_w > 1.3 * plain_w
