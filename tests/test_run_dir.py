"""Tests for policy/run_dir.py: one session per run directory, stale temps removed, failed starts leave nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from policy.run_dir import RunDir, RunDirError, remove_untrained

CFG = OmegaConf.create({"resume": False, "output_root": "outputs", "name": "x"})


def test_one_session_at_a_time_and_the_lock_goes_with_it(tmp_path):
    with RunDir.open(CFG, tmp_path / "run") as session:
        assert session.checkpoint is None and session.latest == tmp_path / "run" / "checkpoints" / "latest.ckpt"
        (session.path / "log.jsonl").write_text('{"step": 1}\n')
        with pytest.raises(RunDirError, match=r"is in use by PID \d+ \(another training holds .*\.lock\)"):
            RunDir.open(CFG, tmp_path / "run")
    with RunDir.open(CFG, tmp_path / "run") as again:
        assert again.path == tmp_path / "run" and (again.path / "log.jsonl").exists()


def test_a_session_failing_before_its_first_step_removes_only_what_training_and_hydra_write(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    stale = run / "checkpoints" / ".latest.tmp-4242-0123abcd.ckpt"
    stale.write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        with RunDir.open(CFG, run):
            assert not stale.exists()  # removed at the start, under the lock
            (run / "train.log").write_text("")
            raise FileNotFoundError("store missing")
    assert not run.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert not remove_untrained(mine) and (mine / "notes.txt").exists()
    trained = tmp_path / "trained"
    (trained / "checkpoints").mkdir(parents=True)
    (trained / "checkpoints" / "latest.ckpt").write_bytes(b"x")
    assert not remove_untrained(trained) and trained.exists()


def test_resume_without_a_run_to_continue_names_it(tmp_path: Path):
    cfg = OmegaConf.merge(CFG, {"resume": True, "output_root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="resume=true but no run named 'x'"):
        RunDir.open(cfg, tmp_path / "fresh")
