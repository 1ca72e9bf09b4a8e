"""Evaluate a policy in a task's env: success rate with a 95% interval, rewards, latency, videos.

The library behind ``eval.py``, train.py's periodic rollouts and the benchmarks. It receives the task's
env as an ``EnvTask`` (``envs.task_env.TaskEnv`` satisfies it), so ``policy/`` never imports ``envs/``.
Episode i of every call is reset with seed ``seed + i`` and the policy's noise comes from a generator
seeded with ``seed``, so (sampler, steps) cells compare on identical initial conditions and a run is
reproducible. Which (sampler, num_steps) pairs can run a model is decided by the sampler itself
(``Sampler.resolve_steps``).

The ``execution`` strategy (policy.execution) decides how chunks are scheduled while the env keeps stepping.
``inference_delay="auto"`` measures the strategy's chunk computation at batch 1 on the task's first observation
(median of ``LATENCY_CHUNKS`` calls after a warm-up, with its own noise generator so the rollout's noise is
unchanged) and converts it with the task's control rate: d = ceil(latency x fps).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np
import torch

from policy.chunk_policy import ChunkPolicy
from policy.controller import RecedingHorizonController
from policy.execution import Execution, delay_from_latency
from policy.instruction import check_instructions
from policy.rollout import run_episodes
from policy.samplers import Sampler, make_sampler

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
LATENCY_CHUNKS = 5  # timed chunk computations behind inference_delay=auto (after one warm-up call)


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


def cell_problem(
    policy: ChunkPolicy, sampler: Sampler, num_steps: int | None, execution: Execution | None = None
) -> str | None:
    """Why (sampler, num_steps) cannot run this policy (with this execution strategy), or None if it can."""
    try:
        sampler.resolve_steps(policy.objective, num_steps)
        if execution is not None:  # an auto delay is only known once measured: check the rest with d = 0
            dataclasses.replace(execution, delay=0 if execution.delay == "auto" else execution.delay).bind(
                policy, sampler.name
            )
    except ValueError as exc:
        return str(exc)
    return None


def measure_latency(
    policy: ChunkPolicy,
    obs: Mapping[str, np.ndarray],
    *,
    sampler: Sampler,
    num_steps: int | None,
    execution: Execution,
    chunks: int = LATENCY_CHUNKS,
    instruction: str | None = None,
    guidance_scale: float = 1.0,
) -> float:
    """Median seconds of one chunk computation at batch 1 on obs {key: (...)}, as the strategy computes it.

    A throwaway one-env controller runs the strategy without delay on the repeated observation, so RTC's calls
    after the first are guided as in the rollout; the first call (unguided, warm-up) is not counted.
    """
    generator = torch.Generator(device=policy.device).manual_seed(0)
    probe = RecedingHorizonController(
        policy,
        1,
        sampler=sampler,
        num_steps=num_steps,
        generator=generator,
        execution=dataclasses.replace(execution, delay=0),
        instruction=instruction,
        guidance_scale=guidance_scale,
    )
    batch = {key: np.asarray(value)[None] for key, value in obs.items()}  # key -> (1, ...)
    while len(probe.latencies) < chunks + 1:
        probe.act(batch)
    return statistics.median(probe.latencies[1:])


def resolve_execution(
    policy: ChunkPolicy,
    execution: Execution,
    *,
    sampler: Sampler,
    num_steps: int | None,
    obs: Mapping[str, np.ndarray],
    fps: float,
    instruction: str | None = None,
    guidance_scale: float = 1.0,
) -> tuple[Execution, float | None]:
    """(execution bound to the policy with d in steps, the measured latency in s for auto else None); EvalError."""
    latency = None
    if execution.delay == "auto":
        try:
            dataclasses.replace(execution, delay=0).bind(policy, sampler.name)
        except ValueError as exc:
            raise EvalError(str(exc)) from exc
        latency = measure_latency(
            policy,
            obs,
            sampler=sampler,
            num_steps=num_steps,
            execution=execution,
            instruction=instruction,
            guidance_scale=guidance_scale,
        )
        execution = dataclasses.replace(execution, delay=delay_from_latency(latency, fps))
    try:
        return execution.bind(policy, sampler.name), latency
    except ValueError as exc:
        measured = "" if latency is None else f"inference_delay=auto measured {latency * 1000:.1f} ms at {fps} fps: "
        raise EvalError(measured + str(exc)) from exc


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
    execution: Execution | None = None,
    progress: bool = True,
    instruction: str | None = None,
    guidance_scale: float = 1.0,
) -> dict[str, Any]:
    """Roll the policy out for n_episodes seeded episodes (seed + i); returns the summary with per-episode records.

    ``instruction`` / ``guidance_scale``: classifier-free guidance of an instruction-conditioned policy (the NFE is
    the sampler's; ``denoiser_batch`` says how many rows each call runs per env: 2 under guidance, else 1).
    """
    execution = Execution() if execution is None else execution
    if temporal_ensemble_k is not None and execution.strategy != "sync":
        raise EvalError(f"temporal_ensemble_k needs execution=sync (it replans every step); got {execution.strategy}")
    if n_episodes < 1 or n_envs < 1:
        raise EvalError(f"n_episodes={n_episodes} and n_envs={n_envs} must be >= 1")
    if n_videos > 0 and out_dir is None:
        raise EvalError("n_videos > 0 needs out_dir to write the videos to")
    sampler = resolve_sampler(policy, sampler)
    try:
        steps = sampler.resolve_steps(policy.objective, num_steps)
        scale = policy.check_instruction_use(instruction, guidance_scale)
        if instruction is not None:
            check_instructions(instruction, 1)  # an empty or non-string instruction, before any env starts
    except ValueError as exc:  # another objective's sampler, a step count or an instruction the model cannot take
        raise EvalError(str(exc)) from exc
    make_env = task.factory(include_image="rgb" in policy.obs_types.values())
    probe = make_env()
    try:
        check_observations(policy, probe, task.env_id)
        success_reward = getattr(probe.unwrapped, "success_reward", None)  # tasks whose success is a reward threshold
        first_obs = probe.reset(seed=seed)[0] if execution.delay == "auto" else {}
    finally:
        probe.close()
    was_training = policy.training
    policy.eval()
    try:
        execution, latency = resolve_execution(
            policy,
            execution,
            sampler=sampler,
            num_steps=num_steps,
            obs=first_obs,
            fps=task.fps,
            instruction=instruction,
            guidance_scale=scale,
        )
    finally:
        policy.train(was_training)

    n_envs = min(n_envs, n_episodes)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    controller = RecedingHorizonController(
        policy,
        n_envs,
        sampler=sampler,
        num_steps=num_steps,
        generator=generator,
        temporal_ensemble_k=temporal_ensemble_k,
        execution=execution,
        instruction=instruction,
        guidance_scale=scale,
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
        "instruction": instruction,
        "guidance_scale": scale,
        "denoiser_batch": 2 if policy.conditioned and scale not in (0, 1) else 1,
        "outcomes": dict(Counter(e["outcome"] for e in episodes if e["outcome"] is not None)),
        "temporal_ensemble_k": temporal_ensemble_k,
        "n_action_steps": int(policy.n_action_steps),  # actions executed per chunk (sync): replanning frequency
        **execution.describe(),
        "auto_delay_latency_ms": None if latency is None else latency * 1000,
        **controller.jump_summary(),
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
    """One Markdown row per cell: sampler, steps, NFE, execution, d, success with CI, rewards, jumps, latency, wall.

    Cells of a task with a success reward (PushT) also show the normalized score beside the max reward.
    "switch jump" is the mean |a_t - a_(t-1)| where a new chunk takes over.
    """
    scored = any(c.get("normalized_score") is not None for c in cells)
    guided = any(c.get("instruction") is not None or c.get("guidance_scale", 1) != 1 for c in cells)
    head = (
        ("| task | instruction | w " if guided else "")
        + "| sampler | steps | NFE | execution | d | success (95% CI) | max reward | "
        + ("normalized score | " if scored else "")
        + "final reward | length | switch jump | latency ms (median / p90) | wall s |"
    )
    rule = ("|---|---|---:" if guided else "") + "|---|---:|---:|---|---:|---|---:|"
    rows = [head, rule + ("---:|" if scored else "") + "---:|---:|---:|---|---:|"]
    for c in cells:
        lat = c["latency_ms"]
        latency = "-" if lat["median"] is None else f"{lat['median']:.1f} / {lat['p90']:.1f}"
        low, high = c["success_ci95"]
        score = (
            "" if not scored else f"{c['normalized_score']:.3f} | " if c.get("normalized_score") is not None else "- | "
        )
        execution = c.get("execution", "sync") if c.get("temporal_ensemble_k") is None else "temporal_ensemble"
        jump = "-" if c.get("switch_jump") is None else f"{c['switch_jump']:.4f}"
        prefix = f"| {c['task']} | {c.get('instruction') or '-'} | {c.get('guidance_scale', 1):g} " if guided else ""
        rows.append(
            f"{prefix}| {c['sampler']} | {c['num_steps']} | {c['nfe']} | {execution} | {c.get('inference_delay', 0)} | "
            f"{c['success_rate']:.2f} ({low:.2f}-{high:.2f}) | {c['mean_max_reward']:.3f} | {score}"
            f"{c['mean_final_reward']:.3f} | {c['mean_length']:.1f} | {jump} | {latency} | {c['wall_time_s']:.1f} |"
        )
    return "\n".join(rows) + "\n"
