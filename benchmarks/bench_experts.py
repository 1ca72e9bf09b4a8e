"""Scripted-expert quality: success rate, mode balance and episode length over N seeded episodes.

Runs each task's expert exactly as demonstration collection does (``data.collect.EpisodeRunner``:
env seed ``i``, expert generator ``[i, 1]``, an episode ends at its first success or at the task's
step limit), without camera images (the expert reads the low-dim state only).

Run: ``python benchmarks/bench_experts.py [--episodes 100] [--tasks actchunk/PushT-v0 ...]``.
Prints a table and writes ``benchmarks/results/bench_experts.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import envs
from data.collect import EpisodeRunner
from results_io import RESULTS_DIR, write_json

DEFAULT_OUT = RESULTS_DIR / "bench_experts.json"


def evaluate_expert(env_id: str, n_episodes: int, noise_std: float | None) -> dict:
    """Run n_episodes seeded expert episodes of one task and summarise them."""
    runner = EpisodeRunner(env_id, {"include_image": False}, envs.TASKS[env_id][1], noise_std)
    names = runner.expert.mode_names
    successes, modes, lengths = [], [], []
    start = time.perf_counter()
    try:
        for seed in range(n_episodes):
            result = runner.run(seed)
            successes.append(result["success"])
            modes.append(result["mode"])
            lengths.append(len(result["data"]["action"]))
    finally:
        runner.close()
    seconds = time.perf_counter() - start
    successes, modes, lengths = np.array(successes), np.array(modes), np.array(lengths)
    return {
        "env_id": env_id,
        "episodes": n_episodes,
        "success_rate": float(successes.mean()),
        "mode_counts": {name: int((modes == m).sum()) for m, name in enumerate(names)},
        "mode_success_rate": {
            name: float(successes[modes == m].mean()) if (modes == m).any() else None for m, name in enumerate(names)
        },
        "mean_steps_to_success": float(lengths[successes].mean()) if successes.any() else None,
        "max_episode_steps": envs.TASKS[env_id][1],
        "steps_per_second": float(lengths.sum() / seconds),
        "seconds": seconds,
    }


def main() -> None:
    """Evaluate the requested experts, print a table and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100, help="seeded episodes per task")
    parser.add_argument("--tasks", nargs="+", default=sorted(envs.TASKS), help="env ids to evaluate")
    parser.add_argument("--noise-std", type=float, default=None, help="expert action noise; default: each expert's own")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args()
    unknown = sorted(set(args.tasks) - set(envs.TASKS))
    if unknown:
        parser.error(f"unknown env ids {unknown}; choose from {sorted(envs.TASKS)}")

    rows = [evaluate_expert(env_id, args.episodes, args.noise_std) for env_id in args.tasks]
    print("| task | episodes | success | modes (count: success) | mean steps to success / limit | steps/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        modes = ", ".join(
            f"{name} {count}: " + ("-" if count == 0 else f"{row['mode_success_rate'][name]:.0%}")
            for name, count in row["mode_counts"].items()
        )
        steps = row["mean_steps_to_success"]
        print(
            f"| {row['env_id']} | {row['episodes']} | {row['success_rate']:.0%} | {modes} | "
            f"{'-' if steps is None else f'{steps:.1f}'} / {row['max_episode_steps']} | {row['steps_per_second']:.0f} |"
        )
    write_json(args.out, {"noise_std": args.noise_std, "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
