"""Tests for benchmarks/bench_instructions.py: cell plans, following arithmetic, tables, a tiny PickPlace study."""

from __future__ import annotations

import json

import pytest

import bench_instructions as bench

LEFT, RIGHT = bench.BINS["left_bin"], bench.BINS["right_bin"]


def _cell(outcomes, successes, nfe=10, batch=1):
    episodes = [{"success": s, "outcome": o} for o, s in zip(outcomes, successes)]
    return {
        "n_episodes": len(episodes),
        "episodes": episodes,
        "nfe": nfe,
        "denoiser_batch": batch,
        "latency_ms": {"median": 5.0},
        "success_rate": sum(successes) / len(successes),
        "success_ci95": [0.0, 1.0],
    }


def test_cells_cover_every_scale_and_instruction_and_the_unconditioned_model_once():
    cells = bench.pick_place_cells([0, 2])
    assert cells == [
        ("conditioned", 0.0, "left_bin"),
        ("conditioned", 0.0, "right_bin"),
        ("conditioned", 2.0, "left_bin"),
        ("conditioned", 2.0, "right_bin"),
        ("unconditioned", 1.0, None),
    ]


def test_following_counts_successes_in_the_instructed_bin():
    evaluated = {
        ("conditioned", 2.0, "left_bin"): _cell(
            ["left_bin", "left_bin", "right_bin", ""], [True, True, True, False], 10, 2
        ),
        ("conditioned", 2.0, "right_bin"): _cell(["right_bin"] * 4, [True, True, True, True], 10, 2),
        ("unconditioned", 1.0, None): _cell(
            ["left_bin", "right_bin", "right_bin", "left_bin"], [True, True, True, False]
        ),
    }
    guided, plain = bench.pick_place_rows(evaluated)
    assert guided["following_rate"] == 6 / 8 and guided["success_rate"] == 7 / 8
    assert guided["following_given_success"] == pytest.approx(6 / 7)
    assert guided["following_per_bin"] == {"left_bin": 0.5, "right_bin": 1.0} and guided["denoiser_batch"] == 2
    # the unconditioned model: one cell scored against each instruction (left 1 of 4, right 2 of 4)
    assert plain["following_rate"] == 3 / 8 and plain["success_rate"] == 3 / 4 and plain["guidance_scale"] is None
    table = bench.pick_place_table([guided, plain], "caption")
    assert "| conditioned | 2 | 0.75 (" in table and "| 0.50 / 1.00 |" in table and "| 2x |" in table
    assert "| unconditioned | - | 0.38 (" in table


def test_metaworld_rows_compare_each_task_and_their_mean():
    single = {"reach-v3": _cell([None] * 4, [True] * 4), "push-v3": _cell([None] * 4, [True, False, False, False])}
    multi = {t: {**_cell([None] * 4, [True, True, False, False]), "instruction": t} for t in single}
    rows = bench.metaworld_rows(single, multi)
    assert [r["task"] for r in rows] == ["reach-v3", "push-v3", "mean"]
    assert rows[0]["gap"] == -0.5 and rows[1]["gap"] == 0.25 and rows[2]["gap"] == pytest.approx(-0.125)
    table = bench.metaworld_table(rows, "caption")
    assert "| reach-v3 | reach-v3 | 1.00 (" in table and "| **mean** | | 0.62 | 0.50 | -12 |" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scales", "-1"], "guidance scales must be >= 0"),
        (["--mw-tasks", "reach-v3"], "at least two distinct"),
        (["--mw-tasks", "reach-v3", "fly-v3"], "unknown: ['fly-v3']"),
        (["--pp-episodes", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_tiny_pick_place_study_writes_table_json_and_plot(tmp_path):
    argv = [
        "--parts", "pick_place", "--pp-steps", "2", "--pp-episodes", "1", "--scales", "0", "2", "--n-envs", "1",
        "--eval-max-steps", "4", "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
        "--pp-overrides", "task.n_demos=2", "policy.denoiser.down_dims=[16,32]", "training.batch_size=8",
        "training.warmup_steps=1", "dataset.val_ratio=0", "dataset.collect_workers=1",
    ]  # fmt: skip
    args = bench.parse_args(argv)
    payload = bench.run_pick_place(args, progress=False)
    assert [(r["model"], r["guidance_scale"]) for r in payload["rows"]] == [
        ("conditioned", 0.0),
        ("conditioned", 2.0),
        ("unconditioned", None),
    ]
    assert [r["denoiser_batch"] for r in payload["rows"]] == [1, 2, 1]
    saved = json.loads((tmp_path / "results" / "instructions_pick_place.json").read_text())
    assert {c["instruction"] for c in saved["cells"]} == {LEFT, RIGHT, None}
    assert (tmp_path / "results" / "instructions_pick_place.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = bench.run_pick_place(bench.parse_args([*argv, "--reuse"]), progress=False)  # every cell from the cache
    assert again["rows"] == payload["rows"]
