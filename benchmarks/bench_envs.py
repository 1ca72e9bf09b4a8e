"""Env steps/second per registered task, with the 96x96 camera image on and off.

Each measurement makes the env with ``gymnasium.make`` (TimeLimit wrapper, no env checker), resets it,
and times ``steps`` calls of ``env.step`` with actions drawn from the action space beforehand (reset
whenever an episode ends, outside the timer), reusing the env's cached renderer. The median over
``repeats`` is reported. Target (issue #3): >= 300 steps/s with the image on one core, so run it pinned:

    taskset -c 0 python benchmarks/bench_envs.py [--steps 300] [--repeats 5]

Prints a table and writes ``benchmarks/results/bench_envs.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import time

import gymnasium

import envs
from results_io import RESULTS_DIR, write_json


def steps_per_second(env_id: str, include_image: bool, steps: int, image_size: int) -> float:
    """Time `steps` env.step calls (resets excluded) and return steps/s."""
    env = gymnasium.make(env_id, include_image=include_image, image_size=image_size, disable_env_checker=True)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=0)
    elapsed = 0.0
    for action in actions:
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        elapsed += time.perf_counter() - start
        if terminated or truncated:
            env.reset()
    env.close()
    return steps / elapsed


def available_tasks() -> list[str]:
    """Registered task ids whose module can be imported (tasks still being written are skipped)."""
    ids = []
    for env_id, (entry_point, _) in envs.TASKS.items():
        try:
            __import__(entry_point.split(":")[0])
        except ModuleNotFoundError:
            print(f"skipping {env_id}: {entry_point} not importable")
            continue
        ids.append(env_id)
    return ids


def main() -> None:
    """Benchmark every available task with the image on and off; print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed env steps per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the median is reported")
    parser.add_argument("--image-size", type=int, default=96, help="camera image side (px)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "bench_envs.json"), help="JSON output")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    print(f"{'task':<26} {'image steps/s':>14} {'no-image steps/s':>17} {'image cost':>11}")
    for env_id in available_tasks():
        row = {}
        for include_image, name in ((True, "image"), (False, "no_image")):
            rates = [steps_per_second(env_id, include_image, args.steps, args.image_size) for _ in range(args.repeats)]
            row[name] = statistics.median(rates)
        results[env_id] = row
        cost_ms = 1e3 * (1 / row["image"] - 1 / row["no_image"])
        print(f"{env_id:<26} {row['image']:>14.0f} {row['no_image']:>17.0f} {cost_ms:>8.2f} ms")

    record = {
        "benchmark": "bench_envs",
        "steps": args.steps,
        "repeats": args.repeats,
        "image_size": args.image_size,
        "mujoco": importlib.metadata.version("mujoco"),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "median_steps_per_s": results,
    }
    print(f"wrote {write_json(args.out, record)}")


if __name__ == "__main__":
    main()
