"""Tests for benchmarks/bench_realtime.py: a tiny end-to-end run on DDPM and flow checkpoints, goals, --reuse."""

from __future__ import annotations

import json

import pytest
from test_eval import _checkpoint

import bench_realtime
from training_runs import BenchmarkError

ARGS = ["--delays", "0", "2", "--execution-horizon", "4", "--episodes", "2", "--n-envs", "1"]
ARGS += ["--max-episode-steps", "10"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realtime")
    ddpm = _checkpoint(tmp / "ddpm.ckpt")
    flow = _checkpoint(tmp / "flow.ckpt", objective="FlowMatching", sampler="EulerSampler")
    argv = [*ARGS, "--model", f"ddpm={ddpm}", "--model", f"flow={flow}"]
    argv += ["--work-dir", str(tmp / "work"), "--out", str(tmp / "out")]
    payload = bench_realtime.run_benchmark(bench_realtime.parse_args(argv), argv, progress=False)
    return {"tmp": tmp, "argv": argv, "payload": payload}


def test_every_strategy_runs_on_the_same_episodes_for_ddpm_and_flow(run):
    saved = json.loads((run["tmp"] / "out" / "realtime.json").read_text())
    assert [m["objective"] for m in saved["models"]] == ["DDPM", "FlowMatching"]
    for model in saved["models"]:
        cells = [(c["execution"], c["delay"]) for c in model["cells"]]
        assert cells[:2] == [("sync", 0), ("temporal_ensemble", 0)]
        assert cells[2:] == [(s, d) for s in bench_realtime.ASYNC for d in (0, 2, "auto")]
        assert all(c["seeds"] == [100000, 100001] and c["n_episodes"] == 2 for c in model["cells"])
        auto = [c for c in model["cells"] if c["delay"] == "auto"]
        assert all(c["auto_delay_latency_ms"] > 0 and c["inference_delay"] >= 1 for c in auto)
        naive = {c["delay"]: c for c in model["cells"] if c["execution"] == "async_naive"}
        assert naive[0]["success_rate"] == model["cells"][0]["success_rate"]  # no delay: async_naive is sync
        assert naive[0]["switch_jump"] == pytest.approx(model["cells"][0]["switch_jump"])
        assert set(model["goals"]) == {
            "rtc_minus_sync_success_at_d4",
            "rtc_within_5_points_at_d4",
            "rtc_smaller_jump_than_naive",
        }
        assert list(model["goals"]["rtc_smaller_jump_than_naive"]) == ["2"]
    table = (run["tmp"] / "out" / "realtime.md").read_text()
    assert table.count("| rtc | auto = ") == 2 and "| async_blend | 2 |" in table and "Goals: RTC - sync" in table
    assert (run["tmp"] / "out" / "realtime.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reuse_keeps_evaluated_cells_and_a_rerun_without_it_is_refused(run, monkeypatch):
    args = bench_realtime.parse_args(run["argv"])
    with pytest.raises(BenchmarkError, match="pass --reuse"):
        bench_realtime.run_benchmark(args, run["argv"], progress=False)
    monkeypatch.setattr(bench_realtime, "evaluate", lambda *a, **k: pytest.fail("a cached cell was re-run"))
    again = bench_realtime.run_benchmark(bench_realtime.parse_args([*run["argv"], "--reuse"]), run["argv"], False)
    assert again["models"][0]["cells"] == run["payload"]["models"][0]["cells"]


def test_bad_model_specs_are_refused(run):
    with pytest.raises(SystemExit):
        bench_realtime.parse_args(["--model", "no-path"])
    args = bench_realtime.parse_args(["--model", f"x={run['tmp'] / 'missing.ckpt'}", "--out", str(run["tmp"] / "o")])
    with pytest.raises(BenchmarkError, match="missing.ckpt of --model x does not exist"):
        bench_realtime.run_benchmark(args, [], progress=False)
