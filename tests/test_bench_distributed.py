"""Tests for benchmarks/bench_distributed.py: the rate read from a run's log, the commands and the table."""

from __future__ import annotations

import json
from pathlib import Path

import bench_distributed


def test_rate_counts_global_batch_samples_between_warmup_and_the_last_step(tmp_path: Path):
    log = [{"step": s, "loss": 1.0, "train_time_s": 0.5 * s + (3.0 if s > 10 else 0.0)} for s in range(10, 60, 10)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"step": 5, "val_loss": 1.0}, *log]))
    assert bench_distributed.samples_per_s(tmp_path, warmup=20, batch=64) == 30 * 64 / 15.0


def test_two_processes_run_under_torchrun_and_the_table_names_each_layout():
    assert bench_distributed.command(1)[1] == "train.py"
    assert bench_distributed.command(2)[1:] == ["--standalone", "--nproc_per_node=2", "train.py"]
    rows = [
        {
            "case": "state",
            "processes": p,
            "threads_per_process": t,
            "samples_per_s": r,
            "efficiency_vs_linear": e,
            "ratio_vs_one_process_same_cores": same,
        }
        for p, t, r, e, same in [(1, 1, 400.0, 1.0, None), (1, 2, 600.0, 0.75, 1.0), (2, 1, 700.0, 0.875, 7 / 6)]
    ]
    table = bench_distributed.table({"results": rows})
    assert "| state | 2 x 1 | 700 | 0.88 | 1.17 |" in table and "| state | 1 x 1 | 400 | 1.00 | - |" in table
