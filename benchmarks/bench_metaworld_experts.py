"""MetaWorld's scripted experts through our wrapper: success rate, steps to success, env speed with and without images.

Runs each task's expert exactly as demonstration collection does (``data.collect.EpisodeRunner``: env
seed ``i``, expert generator ``[i, 1]``, an episode ends at its first success or after 500 steps),
first without camera images (success, steps), then again for the first few seeds with the 96 px
observation image (the speed of collecting image demonstrations). Speeds are medians over episodes of
steps per second, timed after the env and its renderer exist.

Run: ``python benchmarks/bench_metaworld_experts.py [--episodes 10] [--tasks reach-v3 ...]``.
Prints a table and writes ``benchmarks/results/metaworld_experts.json``. Needs ``pip install -e .[metaworld]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from data.collect import EpisodeRunner
from envs.metaworld_tasks import METAWORLD_MAX_EPISODE_STEPS, METAWORLD_TASK_NAMES, metaworld_env_id
from results_io import RESULTS_DIR, write_json

DEFAULT_OUT = RESULTS_DIR / "metaworld_experts.json"
DEFAULT_TASKS = ["reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3", "pick-place-v3"]


def run_episodes(
    task_name: str, seeds: range, env_kwargs: dict, noise_std: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run seeded expert episodes on a warmed-up env; return (successes, lengths, seconds), each (N,)."""
    runner = EpisodeRunner(metaworld_env_id(task_name), env_kwargs, METAWORLD_MAX_EPISODE_STEPS, noise_std)
    successes, lengths, seconds = [], [], []
    try:
        runner.env.reset(seed=seeds[0])  # builds the renderer (GL context) outside the timed episodes
        for seed in seeds:
            start = time.perf_counter()
            result = runner.run(seed)
            seconds.append(time.perf_counter() - start)
            successes.append(result["success"])
            lengths.append(len(result["data"]["action"]))
    finally:
        runner.close()
    return np.array(successes), np.array(lengths), np.array(seconds)


def evaluate_task(task_name: str, n_episodes: int, n_image_episodes: int, image_size: int, noise_std: float) -> dict:
    """Success and speed of one task's expert over n_episodes seeds (images on the first n_image_episodes)."""
    successes, lengths, seconds = run_episodes(task_name, range(n_episodes), {"include_image": False}, noise_std)
    image_seeds = range(min(n_image_episodes, n_episodes))
    _, image_lengths, image_seconds = run_episodes(task_name, image_seeds, {"image_size": image_size}, noise_std)
    return {
        "task": task_name,
        "episodes": n_episodes,
        "success_rate": float(successes.mean()),
        "mean_steps_to_success": float(lengths[successes].mean()) if successes.any() else None,
        "max_steps_to_success": int(lengths[successes].max()) if successes.any() else None,
        "steps_per_second_state_only": float(np.median(lengths / seconds)),  # median over episodes
        "steps_per_second_with_image": float(np.median(image_lengths / image_seconds)),
        "image_episodes": len(image_seeds),
    }


def main() -> None:
    """Evaluate the requested experts, print a table and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10, help="seeded episodes per task")
    parser.add_argument("--image-episodes", type=int, default=3, help="of those, episodes rerun with camera images")
    parser.add_argument("--image-size", type=int, default=96, help="side (px) of the observation image")
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="MetaWorld v3 task names")
    parser.add_argument("--noise-std", type=float, default=0.0, help="expert action noise")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args()
    unknown = sorted(set(args.tasks) - set(METAWORLD_TASK_NAMES))
    if unknown:
        parser.error(f"unknown MetaWorld tasks {unknown}; choose from {list(METAWORLD_TASK_NAMES)}")
    if args.episodes < 1 or args.image_episodes < 1:
        parser.error("--episodes and --image-episodes must be >= 1")

    rows = [evaluate_task(t, args.episodes, args.image_episodes, args.image_size, args.noise_std) for t in args.tasks]
    print(
        "| task | episodes | success | mean / max steps to success | steps/s state only | "
        f"steps/s with {args.image_size} px image |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        steps = (
            "-"
            if row["mean_steps_to_success"] is None
            else f"{row['mean_steps_to_success']:.1f} / {row['max_steps_to_success']}"
        )
        print(
            f"| {row['task']} | {row['episodes']} | {row['success_rate']:.0%} | {steps} | "
            f"{row['steps_per_second_state_only']:.0f} | {row['steps_per_second_with_image']:.0f} |"
        )
    payload = {
        "noise_std": args.noise_std,
        "image_size": args.image_size,
        "max_episode_steps": METAWORLD_MAX_EPISODE_STEPS,
        "results": rows,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
