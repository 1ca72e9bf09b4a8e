"""Training throughput of one process against two torchrun processes (DistributedDataParallel, gloo) on this CPU.

Each layout runs train.py's whole loop for ``--steps`` optimizer steps of the same global batch (validation and
rollouts off): one process with one torch thread, one process with two, and ``torchrun --standalone
--nproc_per_node=2`` with one thread each, so the last two use the same two cores. The rate is taken from the
run's log between step ``--warmup`` and the last step (training time only); layouts alternate ``--rounds`` times
and the table gives the median samples/s and the scaling efficiency: samples/s over that of one single-thread
process times the number of cores used (1.0 = linear), and the two-process rate over the two-thread one's.

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --cases state --steps 200

On a GPU machine the same job is ``torchrun --standalone --nproc_per_node=<GPUs> train.py <overrides>`` (NCCL,
one GPU per process); it was not run here (no GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from results_io import RESULTS_DIR, write_json
from training_runs import compose_train_config

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).parent / "torchrun")
# name -> train.py overrides (the store is collected once, into --work-dir, with the task's expert)
CASES: dict[str, list[str]] = {
    "image": ["+experiment=demo", "task.n_demos=20"],  # make demo's 64 px image + agent_pos policy, batch 64
    "state": ["task=push_t", "~recipe", "obs=state", "task.n_demos=20"],  # low-dim state, UNet [64, 128, 256], batch 64
}
LAYOUTS = ((1, 1), (1, 2), (2, 1))  # (processes, torch threads per process)


def command(processes: int) -> list[str]:
    """train.py alone, or under torchrun with ``processes`` processes on this machine."""
    if processes == 1:
        return [sys.executable, "train.py"]
    return [TORCHRUN, "--standalone", f"--nproc_per_node={processes}", "train.py"]


def samples_per_s(run_dir: Path, warmup: int, batch: int) -> float:
    """Global-batch samples per training second between step ``warmup`` and the last logged step."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    timed = [r for r in records if "train_time_s" in r]
    first = min((r for r in timed if r["step"] >= warmup), key=lambda r: r["step"])
    last = max(timed, key=lambda r: r["step"])
    return (last["step"] - first["step"]) * batch / (last["train_time_s"] - first["train_time_s"])


def train_once(overrides: Sequence[str], processes: int, threads: int, run_dir: Path) -> None:
    """One training run of the layout; RuntimeError with its output's tail if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*command(processes), *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{processes} x {threads} failed:\n{(done.stdout + done.stderr)[-3000:]}")


def run(cases: Sequence[str], steps: int, warmup: int, rounds: int, work_dir: Path) -> dict:
    """Measure every layout of every case, alternating layouts within each round; returns the results."""
    results = []
    for case in cases:
        store = work_dir / f"{case}.zarr"
        overrides = [
            *CASES[case],
            f"task.dataset_path={store}",
            f"training.max_steps={steps}",
            "training.log_every=10",
            f"training.val_every={steps}",
            "training.val_batches=1",
            f"training.checkpoint_every={steps}",
            "rollout.every=0",
            "name=bench_distributed",
        ]
        batch = compose_train_config(overrides).training.batch_size  # the global batch, the same for every layout
        rates: dict[tuple[int, int], list[float]] = {layout: [] for layout in LAYOUTS}
        for round_ in range(rounds):
            for processes, threads in LAYOUTS:
                with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
                    train_once(overrides, processes, threads, Path(tmp) / "run")
                    rates[processes, threads].append(samples_per_s(Path(tmp) / "run", warmup, batch))
                print(f"{case} round {round_}: {processes} x {threads}: {rates[processes, threads][-1]:.0f} samples/s")
        base = statistics.median(rates[1, 1])
        same_cores = statistics.median(rates[1, 2])
        for processes, threads in LAYOUTS:
            rate = statistics.median(rates[processes, threads])
            results.append(
                {
                    "case": case,
                    "global_batch": batch,
                    "processes": processes,
                    "threads_per_process": threads,
                    "samples_per_s": rate,
                    "rounds": rates[processes, threads],
                    "efficiency_vs_linear": rate / (base * processes * threads),
                    "ratio_vs_one_process_same_cores": rate / same_cores if processes * threads == 2 else None,
                }
            )
    return {
        "steps": steps,
        "warmup": warmup,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "load_average_after": os.getloadavg(),  # other jobs on a shared machine slow multi-threaded layouts most
        },
        "gpu_command": "torchrun --standalone --nproc_per_node=<GPUs> train.py <overrides>  (not run: no GPU)",
        "results": results,
    }


def table(payload: dict) -> str:
    """The Markdown table of the results."""
    lines = [
        "| case | processes x threads | samples/s | efficiency vs linear | vs 1 process on the same cores |",
        "|---|---|---:|---:|---:|",
    ]
    for r in payload["results"]:
        same = "-" if r["ratio_vs_one_process_same_cores"] is None else f"{r['ratio_vs_one_process_same_cores']:.2f}"
        lines.append(
            f"| {r['case']} | {r['processes']} x {r['threads_per_process']} | {r['samples_per_s']:.0f} | "
            f"{r['efficiency_vs_linear']:.2f} | {same} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print its table, write bench_distributed.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES), help="configs to time")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=30, help="steps left out of the rate")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the layouts")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "bench_distributed", help="stores, runs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where bench_distributed.json goes")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup + 10 or args.rounds < 1:
        sys.exit("bench_distributed.py: error: need --steps > --warmup + 10 and --rounds >= 1")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    payload = run(args.cases, args.steps, args.warmup, args.rounds, args.work_dir)
    write_json(args.out / "bench_distributed.json", payload)
    print(table(payload))


if __name__ == "__main__":
    main()
