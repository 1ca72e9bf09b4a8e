"""Tests for data/verify.py: the whole-store check lists every damaged chunk and exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from data.replay_buffer import ReplayBuffer
from data.verify import main, verify_store

ROOT = Path(__file__).resolve().parents[1]


def _store(path: Path) -> Path:
    buf = ReplayBuffer.create(path, chunk_bytes=64)
    rng = np.random.default_rng(0)
    for _ in range(3):
        buf.add_episode({"action": rng.normal(size=(6, 2)).astype(np.float32)}, {"seed": 1})
    buf.close()
    return path


def test_intact_store_is_ok_and_every_problem_gets_a_line(tmp_path, capsys):
    path = _store(tmp_path / "s.zarr")
    assert verify_store(str(path)) == [f"ok: {path}: 3 episodes, 18 steps, 5 chunks read"]
    (path / "data" / "action" / "c" / "0" / "0").unlink()
    (path / "data" / "action" / "c" / "2" / "0").write_bytes(b"\x00" * 12)
    assert main([str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"damaged: {path}: data/action chunk c/0/0 (rows 0..7) is missing",
        f"damaged: {path}: data/action chunk c/2/0 is damaged (crc32c checksum mismatch)",
    ]


def test_command_line(tmp_path):
    path = _store(tmp_path / "s.zarr")
    done = subprocess.run(
        [sys.executable, "-m", "data.verify", str(path), str(tmp_path / "none.zarr")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout.startswith(f"ok: {path}")
    assert done.stderr.strip() == f"damaged: {tmp_path / 'none.zarr'}: no such store; " + (
        "create it with ReplayBuffer.create or collect demos first"
    )
