"""Tests for data.collect: stored layout, both modes, resume after an interrupt, append, parallel workers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from configs import compose_config
from data.collect import EpisodeRunner, collect, format_summary
from data.replay_buffer import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]


def task_cfg(name: str = "push_around", image_size: int = 32) -> dict:
    """A task config as train.py would pass it (resolved), with small images for speed."""
    cfg = compose_config("train", [f"task={name}", f"task.env_kwargs.image_size={image_size}"])
    return OmegaConf.to_container(cfg.task, resolve=True)


def test_collect_stores_successful_episodes_with_both_modes(tmp_path):
    out = tmp_path / "demo.zarr"
    summary = collect(task_cfg(), 6, out, seed=0, progress=False)
    buffer = ReplayBuffer.open(out)
    assert buffer.n_episodes == 6 and summary["episodes"] == 6 and summary["complete"]
    assert sorted(buffer.keys()) == ["action", "agent_pos", "image", "state"]
    assert buffer["image"].shape[1:] == (32, 32, 3) and buffer["image"].dtype == np.uint8
    assert buffer["action"].dtype == np.float32 and np.abs(buffer["action"]).max() <= 0.25
    assert buffer.attrs["task"] == "push_around" and buffer.attrs["mode_names"] == ["left", "right"]
    assert buffer.attrs["obs_keys"] == ["agent_pos", "image", "state"] and buffer.attrs["fps"] == 10
    assert set(buffer.episode_meta("mode").tolist()) == {0, 1}  # both modes in the data
    sides = {0: "go around the left end of the wall", 1: "go around the right end of the wall"}
    assert [str(t) for t in buffer.episode_meta("instruction")] == [sides[m] for m in buffer.episode_meta("mode")]
    assert set(buffer.episode_meta("task").tolist()) == {"push_around"}
    assert buffer.episode_meta("success").all()
    assert sum(summary["mode_counts"].values()) == 6
    np.testing.assert_array_equal(buffer.episode_meta("seed"), np.arange(6))
    runner = EpisodeRunner("actchunk/PushAround-v0", {"image_size": 32}, 100, None)
    replay = runner.run(3)  # an episode is reproducible from its seed alone
    runner.close()
    for key, value in replay["data"].items():
        np.testing.assert_array_equal(value, buffer.get_episode(3)[key])
    assert "expert success" in format_summary(summary)


def test_steps_after_success_extend_each_episode_past_its_first_success(tmp_path):
    runners = [EpisodeRunner("actchunk/PushAround-v0", {"image_size": 32}, 100, None, after) for after in (0, 5)]
    plain, extended = (runner.run(2) for runner in runners)
    for runner in runners:
        runner.close()
    n = len(plain["data"]["action"])
    assert extended["success"] and len(extended["data"]["action"]) == n + 5
    for key, value in plain["data"].items():  # the same episode up to the first success, then 5 more steps
        np.testing.assert_array_equal(extended["data"][key][:n], value)
    cfg = task_cfg()
    cfg["expert"]["steps_after_success"] = -1
    with pytest.raises(ValueError, match="steps_after_success=-1 must be >= 0"):
        collect(cfg, 1, tmp_path / "never.zarr", progress=False)
    assert not (tmp_path / "never.zarr").exists()


def test_resume_after_interrupt_neither_duplicates_nor_loses(tmp_path, monkeypatch):
    reference = tmp_path / "reference.zarr"
    collect(task_cfg(), 5, reference, seed=10, progress=False)
    out = tmp_path / "resumed.zarr"
    original_run = EpisodeRunner.run
    calls = []

    def interrupted_run(self, seed):
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original_run(self, seed)

    monkeypatch.setattr(EpisodeRunner, "run", interrupted_run)
    with pytest.raises(KeyboardInterrupt):
        collect(task_cfg(), 5, out, seed=10, progress=False)
    assert ReplayBuffer.open(out).n_episodes == 2
    monkeypatch.setattr(EpisodeRunner, "run", original_run)
    summary = collect(task_cfg(), 5, out, seed=10, progress=False)
    assert summary["new_episodes"] == 3 and summary["attempts"] == 3
    resumed, expected = ReplayBuffer.open(out), ReplayBuffer.open(reference)
    np.testing.assert_array_equal(resumed.episode_meta("seed"), np.arange(10, 15))
    np.testing.assert_array_equal(resumed.episode_ends, expected.episode_ends)
    for key in expected.keys():
        np.testing.assert_array_equal(resumed[key], expected[key])


def test_append_and_task_mismatch(tmp_path):
    out = tmp_path / "demo.zarr"
    collect(task_cfg(), 2, out, progress=False)
    summary = collect(task_cfg(), 2, out, progress=False)
    assert summary["new_episodes"] == 0 and summary["attempts"] == 0  # already full: nothing to do
    summary = collect(task_cfg(), 3, out, seed=100, progress=False)
    assert summary["new_episodes"] == 1
    assert ReplayBuffer.open(out).episode_meta("seed").tolist() == [0, 1, 100]
    with pytest.raises(ValueError, match="task"):
        collect(task_cfg("push_t"), 4, out, progress=False)


def test_failed_episodes_are_skipped_unless_kept(tmp_path):
    cfg = task_cfg()
    cfg["max_episode_steps"] = 3  # too short for the expert to succeed
    summary = collect(cfg, 2, tmp_path / "skip.zarr", max_attempts=3, progress=False)
    assert summary["episodes"] == 0 and summary["attempts"] == 3 and not summary["complete"]
    assert summary["expert_success_rate"] == 0.0 and "WARNING" in format_summary(summary)
    summary = collect(cfg, 2, tmp_path / "keep.zarr", keep_failed=True, progress=False)
    buffer = ReplayBuffer.open(tmp_path / "keep.zarr")
    assert buffer.n_episodes == 2 and not buffer.episode_meta("success").any()
    assert buffer.episode_lengths.tolist() == [3, 3]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_episodes"):
        collect(task_cfg(), 0, tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="n_workers"):
        collect(task_cfg(), 1, tmp_path / "x.zarr", n_workers=0)
    with pytest.raises(ValueError, match="env_id"):
        collect({**task_cfg(), "env_id": "actchunk/Nope-v0"}, 1, tmp_path / "x.zarr")


def test_parallel_workers_store_the_same_episodes(tmp_path):
    collect(task_cfg(), 3, tmp_path / "serial.zarr", progress=False)
    collect(task_cfg(), 3, tmp_path / "parallel.zarr", n_workers=2, progress=False)
    serial, parallel = ReplayBuffer.open(tmp_path / "serial.zarr"), ReplayBuffer.open(tmp_path / "parallel.zarr")
    np.testing.assert_array_equal(serial.episode_meta("seed"), parallel.episode_meta("seed"))
    for key in serial.keys():
        np.testing.assert_array_equal(serial[key], parallel[key])


def test_command_line(tmp_path):
    out = tmp_path / "cli.zarr"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data.collect",
            "task=push_around",
            "n_episodes=2",
            f"out={out}",
            "task.env_kwargs.image_size=24",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "expert success" in result.stdout and "100.0%" in result.stdout
    buffer = ReplayBuffer.open(out)
    assert buffer.n_episodes == 2 and buffer["image"].shape[1:] == (24, 24, 3)


def _collect_cli(tmp_path: Path, *args: str) -> subprocess.Popen:
    """``python -m data.collect`` on 24 px PushAround with its hydra dir in tmp_path."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "data.collect",
            "task=push_around",
            "task.env_kwargs.image_size=24",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_concurrent_collects_into_one_store_hold_exactly_the_serial_episodes(tmp_path):
    out = tmp_path / "shared.zarr"
    runs = [_collect_cli(tmp_path, f"n_episodes={n}", f"out={out}") for n in (3, 6)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for _, err in results]
    added = [int(re.search(r"\((\+\d+) this run\)", out_).group(1)) for out_, _ in results]
    reference = tmp_path / "serial.zarr"
    collect(task_cfg(image_size=24), 6, reference, progress=False)
    shared, serial = ReplayBuffer.open(out), ReplayBuffer.open(reference)
    assert shared.n_episodes == 6 == sum(added)  # every episode a run reports is in the store
    seeds = shared.episode_meta("seed").tolist()
    assert sorted(seeds) == list(range(6))
    for i, seed in enumerate(seeds):  # each episode's data is the one its seed produces
        for key, value in serial.get_episode(seed).items():
            np.testing.assert_array_equal(shared.get_episode(i)[key], value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["n_episodes=0"], "data.collect: error: n_episodes=0 must be an integer >= 1"),
        (["n_episodz=3"], "data.collect: error: unknown option 'n_episodz'; valid options: task, n_episodes"),
        (["out={notes}"], "data.collect: error: {notes}: missing 'meta/episode_ends'; not a replay buffer store"),
    ],
)
def test_command_line_bad_input_is_one_line(tmp_path, args, message):
    notes = tmp_path / "notes"
    notes.mkdir()
    run = _collect_cli(tmp_path, *(a.format(notes=notes) for a in args))
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1 and err.strip().splitlines() == [err.strip()], err[-1500:]
    assert err.strip().startswith(message.format(notes=notes))
    assert list(notes.iterdir()) == []  # a directory that is not a store is left as it was


def test_wrong_task_and_bad_counts_are_refused_before_anything_runs(tmp_path):
    out = tmp_path / "demo.zarr"
    collect(task_cfg(), 1, out, progress=False)
    with pytest.raises(ValueError, match=r"holds task='push_around', this run has 'push_t'; choose another `out`"):
        collect(task_cfg("push_t"), 1, out, progress=False)
    with pytest.raises(ValueError, match="n_workers=0 must be an integer >= 1"):
        collect(task_cfg(), 1, out, n_workers=0)
    with pytest.raises(ValueError, match="max_attempts=0 must be an integer >= 1"):
        collect(task_cfg(), 1, out, max_attempts=0)
    assert ReplayBuffer.open(out, mode="a").n_episodes == 1  # the refused runs released the store's lock


@pytest.mark.parametrize(
    ("task", "instructions"),
    [
        ("pick_place_top", ("put the cube in the left bin", "put the cube in the right bin")),
        ("push_t", ("rotate the T into place, then slide it", "slide the T into place, then rotate it")),
    ],
)
def test_every_expert_mode_has_its_instruction(task, instructions):
    cfg = task_cfg(task)
    runner = EpisodeRunner(cfg["env_id"], cfg["env_kwargs"], 1, None)
    try:
        assert runner.expert.mode_instructions == instructions
        result = runner.run(0)
        assert result["instruction"] == instructions[result["mode"]]
    finally:
        runner.close()


def test_a_store_collected_before_instructions_keeps_its_meta_keys(tmp_path):
    out = tmp_path / "old.zarr"
    cfg = task_cfg()
    collect(cfg, 1, out, progress=False)
    old = ReplayBuffer.open(out)  # rewrite it as an older actchunk stored it: seed, mode, success only
    episode, meta = old.get_episode(0), {k: old.episode_meta(k)[:1].tolist()[0] for k in ("seed", "mode", "success")}
    old.close()
    legacy = tmp_path / "legacy.zarr"
    buffer = ReplayBuffer.create(legacy, attrs=dict(ReplayBuffer.open(out).attrs))
    buffer.add_episode(episode, meta)
    buffer.close()
    collect(cfg, 2, legacy, progress=False)
    assert sorted(ReplayBuffer.open(legacy).meta_keys()) == ["mode", "seed", "success"]
