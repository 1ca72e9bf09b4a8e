"""Evaluate a policy in a task's env: success rate with a 95% interval, rewards, latency, videos.

The library behind ``eval.py``, train.py's periodic rollouts and the benchmarks. It receives the task's
env as an ``EnvTask`` (``envs.task_env.TaskEnv`` satisfies it), so ``policy/`` never imports ``envs/``.
Episode i of every call is reset with seed ``seed + i`` and the policy's noise comes from a generator
seeded with ``seed``, so (sampler, steps) cells compare on identical initial conditions and a run is
reproducible. Which (sampler, num_steps) pairs can run a model is decided by the sampler itself
(``Sampler.resolve_steps``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np
import torch

from policy.chunk_policy import ChunkPolicy
from policy.controller import RecedingHorizonController
from policy.rollout import run_episodes
from policy.samplers import Sampler, make_sampler

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


class EvalError(ValueError):
    """An evaluation that cannot run as configured (wrong task, observation keys, sweep values)."""


class EnvTask(Protocol):
    """What evaluation needs to know of a task's env (``envs.task_env.TaskEnv``)."""

    env_id: str
    fps: int

    def factory(self, include_image: bool = True) -> Callable[[], gymnasium.Env]:
        """A picklable no-argument env factory (episodes end at the first success)."""
        ...


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def resolve_sampler(policy: ChunkPolicy, sampler: Sampler | str | None) -> Sampler:
    """A sampler instance: the policy's own for None or its name, else a fresh one by name (defaults of its class)."""
    if sampler is None or (isinstance(sampler, str) and sampler == policy.sampler.name):
        return policy.sampler
    return make_sampler(sampler) if isinstance(sampler, str) else sampler


def cell_problem(policy: ChunkPolicy, sampler: Sampler, num_steps: int | None) -> str | None:
    """Why (sampler, num_steps) cannot run this policy, or None if it can."""
    try:
        sampler.resolve_steps(policy.objective, num_steps)
    except ValueError as exc:
        return str(exc)
    return None


def check_observations(policy: ChunkPolicy, env: gymnasium.Env, env_id: str) -> None:
    """EvalError naming both sides unless the env provides every observation the policy reads, in its shape."""
    space = env.observation_space
    env_shapes = {key: tuple(sub.shape) for key, sub in getattr(space, "spaces", {}).items()}
    wanted = {key: tuple(shape) for key, shape in policy.obs_shapes.items()}
    if any(env_shapes.get(key) != shape for key, shape in wanted.items()):
        raise EvalError(
            f"checkpoint observations {wanted} do not match {env_id}'s observations {env_shapes}; "
            "evaluate the checkpoint on the task it was trained on"
        )


def evaluate(
    policy: ChunkPolicy,
    task: EnvTask,
    *,
    n_episodes: int,
    n_envs: int,
    seed: int,
    sampler: Sampler | str | None = None,
    num_steps: int | None = None,
    out_dir: str | Path | None = None,
    n_videos: int = 0,
    temporal_ensemble_k: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll the policy out for n_episodes seeded episodes (seed + i); returns the summary with per-episode records."""
    if n_episodes < 1 or n_envs < 1:
        raise EvalError(f"n_episodes={n_episodes} and n_envs={n_envs} must be >= 1")
    if n_videos > 0 and out_dir is None:
        raise EvalError("n_videos > 0 needs out_dir to write the videos to")
    sampler = resolve_sampler(policy, sampler)
    try:
        steps = sampler.resolve_steps(policy.objective, num_steps)
    except ValueError as exc:  # a sampler of another objective kind, or a step count the model cannot take
        raise EvalError(str(exc)) from exc
    make_env = task.factory(include_image="rgb" in policy.obs_types.values())
    probe = make_env()
    try:
        check_observations(policy, probe, task.env_id)
        success_reward = getattr(probe.unwrapped, "success_reward", None)  # tasks whose success is a reward threshold
    finally:
        probe.close()

    n_envs = min(n_envs, n_episodes)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    controller = RecedingHorizonController(
        policy,
        n_envs,
        sampler=sampler,
        num_steps=num_steps,
        generator=generator,
        temporal_ensemble_k=temporal_ensemble_k,
    )
    seeds = [seed + i for i in range(n_episodes)]
    video_dir = None if out_dir is None else Path(out_dir) / "videos"
    was_training = policy.training
    policy.eval()
    start = time.perf_counter()
    try:
        episodes = run_episodes(
            make_env, controller, seeds, video_dir=video_dir, n_videos=n_videos, fps=task.fps, progress=progress
        )
    finally:
        policy.train(was_training)
    wall = time.perf_counter() - start
    return summarize(episodes, controller.latencies, wall, success_reward=success_reward) | {
        "task": task.env_id,
        "sampler": sampler.name,
        "num_steps": steps,
        "nfe": sampler.nfe(steps),
        "temporal_ensemble_k": temporal_ensemble_k,
        "n_envs": n_envs,
        "seed": seed,
        "videos": [e["video"] for e in episodes if e["video"] is not None],
        "episodes": episodes,
    }


def normalized_score(max_rewards: Sequence[float], success_reward: float) -> float:
    """Mean of max reward / success reward clipped to [0, 1]: Diffusion Policy's PushT score (coverage / 0.95)."""
    return float(np.mean(np.clip(np.asarray(max_rewards, dtype=np.float64) / success_reward, 0.0, 1.0)))


def summarize(
    episodes: Sequence[Mapping[str, Any]],
    latencies: Sequence[float],
    wall_time: float,
    *,
    success_reward: float | None = None,
) -> dict[str, Any]:
    """Success rate with its Wilson 95% interval, mean rewards and length, predict_action latency and throughput.

    With a ``success_reward`` (the task's success threshold on the reward) the summary also carries
    ``normalized_score`` (see ``normalized_score``); without one it is None.
    """
    n = len(episodes)
    successes = sum(bool(e["success"]) for e in episodes)
    steps = sum(e["length"] for e in episodes)
    lat = np.asarray(latencies, dtype=np.float64) * 1000  # ms per predict_action call
    low, high = wilson_interval(successes, n)
    return {
        "n_episodes": n,
        "success_rate": successes / n,
        "success_ci95": [low, high],
        "mean_max_reward": float(np.mean([e["max_reward"] for e in episodes])),
        "normalized_score": None
        if success_reward is None
        else normalized_score([e["max_reward"] for e in episodes], success_reward),
        "mean_final_reward": float(np.mean([e["final_reward"] for e in episodes])),
        "mean_length": steps / n,
        "n_errors": sum(e["error"] is not None for e in episodes),
        "latency_ms": {
            "median": float(np.median(lat)) if len(lat) else None,
            "p90": float(np.percentile(lat, 90)) if len(lat) else None,
            "calls": int(len(lat)),
        },
        "actions_per_s": steps / lat.sum() * 1000 if lat.sum() > 0 else None,  # executed actions per policy second
        "wall_time_s": wall_time,
    }


def markdown_table(cells: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown row per cell: sampler, steps, NFE, success with CI, rewards, length, latency, wall time.

    Cells of a task with a success reward (PushT) also show the normalized score beside the max reward.
    """
    scored = any(c.get("normalized_score") is not None for c in cells)
    head = (
        "| sampler | steps | NFE | success (95% CI) | max reward | "
        + ("normalized score | " if scored else "")
        + "final reward | length | latency ms (median / p90) | wall s |"
    )
    rows = [head, "|---|---:|---:|---|---:|" + ("---:|" if scored else "") + "---:|---:|---|---:|"]
    for c in cells:
        lat = c["latency_ms"]
        latency = "-" if lat["median"] is None else f"{lat['median']:.1f} / {lat['p90']:.1f}"
        low, high = c["success_ci95"]
        score = (
            "" if not scored else f"{c['normalized_score']:.3f} | " if c.get("normalized_score") is not None else "- | "
        )
        rows.append(
            f"| {c['sampler']} | {c['num_steps']} | {c['nfe']} | {c['success_rate']:.2f} ({low:.2f}-{high:.2f}) | "
            f"{c['mean_max_reward']:.3f} | {score}{c['mean_final_reward']:.3f} | {c['mean_length']:.1f} | {latency} | "
            f"{c['wall_time_s']:.1f} |"
        )
    return "\n".join(rows) + "\n"
