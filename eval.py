"""Evaluate a checkpoint in its task's env: success rate with a 95% interval, rewards, latency, videos.

    python eval.py checkpoint=PATH n_episodes=50 n_envs=4 sampler=ddim sampler.num_steps=10
    python eval.py checkpoint=PATH sweep.samplers=[ddpm,ddim,dpmsolver] sweep.num_steps=[1,2,4,8,16,100]

The checkpoint alone is enough: its stored config names the task (env id, env kwargs, episode length,
fps). Episode i of every (sampler, steps) cell is reset with seed ``seed + i`` and the policy's noise
comes from a generator seeded with ``seed``, so cells compare on identical initial conditions and a
run is reproducible. Writes results.json, results.md and the videos into ``out_dir``.

``evaluate`` is the same code path for train.py's periodic rollouts.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium
import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException, OverrideParseException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import envs  # noqa: F401  (registers the actchunk/* env ids)
from envs.wrappers import make_reporting_env
from policy.checkpoint import (
    CheckpointError,
    checkpoint_config,
    load_checkpoint,
    policy_from_checkpoint,
)
from policy.chunk_policy import check_sampler
from policy.controller import RecedingHorizonController
from policy.optim import resolve_device
from policy.rollout import run_episodes
from policy.samplers import Sampler, make_sampler

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "eval.yaml"


class EvalError(ValueError):
    """An evaluation that cannot run as configured (wrong task, observation keys, sweep values)."""


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def resolve_sampler(policy: Any, sampler: Sampler | str | None) -> Sampler:
    """A sampler instance: the policy's own for None or its name, else a fresh one by name (defaults of its class)."""
    if sampler is None or (isinstance(sampler, str) and sampler == policy.sampler.name):
        return policy.sampler
    return make_sampler(sampler) if isinstance(sampler, str) else sampler


def effective_steps(policy: Any, sampler: Sampler, num_steps: int | None) -> int:
    """The step count a predict_action call will use (DDPM's null means the full training chain)."""
    if num_steps is not None:
        return num_steps
    if sampler.num_steps is not None:
        return sampler.num_steps
    return int(policy.objective.num_train_steps)


def cell_problem(policy: Any, sampler: Sampler, num_steps: int | None) -> str | None:
    """Why (sampler, num_steps) cannot run this policy, or None if it can."""
    try:
        check_sampler(sampler, policy.objective)
    except ValueError as exc:
        return str(exc)
    if num_steps is not None and num_steps < 1:
        return f"num_steps={num_steps} must be >= 1"
    limit = getattr(policy.objective, "num_train_steps", None)
    if num_steps is not None and limit is not None and "ddpm" in sampler.compatible_objectives and num_steps > limit:
        return f"num_steps={num_steps} exceeds the model's num_train_steps={limit}"
    return None


def make_env_factory(task_cfg: Mapping[str, Any], include_image: bool = True) -> functools.partial:
    """A picklable no-argument factory for the task's env, ending episodes at the first success.

    ``include_image=False`` skips rendering the observation camera (for state-based policies); the
    task's own env_kwargs win over both defaults.
    """
    missing = [key for key in ("env_id", "env_kwargs", "max_episode_steps", "fps") if key not in task_cfg]
    if missing:
        raise EvalError(f"task config lacks {missing}; it must be a resolved configs/task/<name>.yaml")
    env_kwargs = {"terminate_on_success": True, "include_image": include_image, **task_cfg["env_kwargs"]}
    return functools.partial(
        make_reporting_env,
        task_cfg["env_id"],
        max_episode_steps=int(task_cfg["max_episode_steps"]),
        disable_env_checker=True,
        **env_kwargs,
    )


def check_observations(policy: Any, env: gymnasium.Env, env_id: str) -> None:
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
    policy: Any,
    task_cfg: Mapping[str, Any],
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
    problem = cell_problem(policy, sampler, num_steps)
    if problem is not None:
        raise EvalError(problem)
    make_env = make_env_factory(task_cfg, include_image="rgb" in policy.obs_types.values())
    probe = make_env()
    try:
        check_observations(policy, probe, task_cfg["env_id"])
    finally:
        probe.close()

    n_envs = min(n_envs, n_episodes)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    controller = RecedingHorizonController(
        policy, n_envs, sampler=sampler, num_steps=num_steps, generator=generator, temporal_ensemble_k=temporal_ensemble_k
    )
    seeds = [seed + i for i in range(n_episodes)]
    video_dir = None if out_dir is None else Path(out_dir) / "videos"
    was_training = policy.training
    policy.eval()
    start = time.perf_counter()
    try:
        episodes = run_episodes(
            make_env, controller, seeds, video_dir=video_dir, n_videos=n_videos, fps=int(task_cfg["fps"]), progress=progress
        )
    finally:
        policy.train(was_training)
    wall = time.perf_counter() - start
    steps = effective_steps(policy, sampler, num_steps)
    return summarize(episodes, controller.latencies, wall) | {
        "task": task_cfg["env_id"],
        "sampler": sampler.name,
        "num_steps": steps,
        "nfe": sampler.nfe(steps),
        "temporal_ensemble_k": temporal_ensemble_k,
        "n_envs": n_envs,
        "seed": seed,
        "videos": [e["video"] for e in episodes if e["video"] is not None],
        "episodes": episodes,
    }


def summarize(episodes: Sequence[Mapping[str, Any]], latencies: Sequence[float], wall_time: float) -> dict[str, Any]:
    """Success rate with its Wilson 95% interval, mean rewards and length, predict_action latency and throughput."""
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
    """One Markdown row per cell: sampler, steps, NFE, success with CI, rewards, length, latency, wall time."""
    head = "| sampler | steps | NFE | success (95% CI) | max reward | final reward | length | latency ms (median / p90) | wall s |"
    rows = [head, "|---|---:|---:|---|---:|---:|---:|---|---:|"]
    for c in cells:
        lat = c["latency_ms"]
        latency = "-" if lat["median"] is None else f"{lat['median']:.1f} / {lat['p90']:.1f}"
        low, high = c["success_ci95"]
        rows.append(
            f"| {c['sampler']} | {c['num_steps']} | {c['nfe']} | {c['success_rate']:.2f} ({low:.2f}-{high:.2f}) | "
            f"{c['mean_max_reward']:.3f} | {c['mean_final_reward']:.3f} | {c['mean_length']:.1f} | {latency} | "
            f"{c['wall_time_s']:.1f} |"
        )
    return "\n".join(rows) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to path via a temp file in the same directory and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def default_out_dir(checkpoint: Path, label: str) -> Path:
    """<run dir>/eval/<time>_<label>; the run dir is the checkpoint's parent, or its grandparent under checkpoints/."""
    parent = checkpoint.resolve().parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / "eval" / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}_{label}"


def plan_cells(policy: Any, cfg: DictConfig) -> tuple[list[tuple[Sampler, int | None]], list[str]]:
    """The (sampler, num_steps) cells to run and the notes on skipped invalid pairs."""
    try:
        if cfg.sweep.samplers:
            samplers = [resolve_sampler(policy, str(name)) for name in cfg.sweep.samplers]
        else:
            samplers = [resolve_sampler(policy, None if cfg.get("sampler") is None else instantiate(cfg.sampler))]
    except (ValueError, InstantiationException) as exc:  # unknown sampler name or bad sampler setting
        raise EvalError(f"sampler: {exc.__cause__ or exc}") from exc
    steps = [int(n) for n in cfg.sweep.num_steps] or [None]
    cells, skipped = [], []
    for sampler in samplers:
        for n in steps:
            problem = cell_problem(policy, sampler, n)
            if problem is None:
                cells.append((sampler, n))
            else:
                skipped.append(f"{sampler.name} x {n if n is not None else 'default'} steps: {problem}")
    if not cells:
        raise EvalError(f"no valid (sampler, num_steps) pair to evaluate: {'; '.join(skipped)}")
    return cells, skipped


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint, evaluate every cell, write results.json and results.md; returns what was written."""
    device = resolve_device(cfg.device)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    path = Path(cfg.checkpoint)
    ckpt = load_checkpoint(path, map_location=device)
    task_cfg = checkpoint_config(ckpt).get("task")
    if not isinstance(task_cfg, dict):
        raise CheckpointError(f"checkpoint {path} has no task section in its config; it was not written by train.py")
    policy = policy_from_checkpoint(ckpt, use_ema=cfg.use_ema, path=path).to(device)
    cells, skipped = plan_cells(policy, cfg)
    sweep = bool(cfg.sweep.samplers or cfg.sweep.num_steps)
    first_sampler, first_steps = cells[0]
    label = "sweep" if sweep else f"{first_sampler.name}-{effective_steps(policy, first_sampler, first_steps)}"
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else default_out_dir(path, label)
    out_dir.mkdir(parents=True, exist_ok=True)
    for note in skipped:
        print(f"skipped {note}")

    results = []
    for sampler, n in cells:
        name = f"{sampler.name}-{effective_steps(policy, sampler, n)}"
        results.append(
            evaluate(
                policy, task_cfg, n_episodes=cfg.n_episodes, n_envs=cfg.n_envs, seed=cfg.seed, sampler=sampler, num_steps=n,
                out_dir=out_dir / name if sweep else out_dir, n_videos=cfg.n_videos,
                temporal_ensemble_k=cfg.temporal_ensemble_k, progress=cfg.progress,
            )
        )
        print(f"{name}: success {results[-1]['success_rate']:.2f} in {results[-1]['wall_time_s']:.1f} s", file=sys.stderr)
    weights = "ema" if cfg.use_ema and ckpt.get("ema") is not None else "model"
    header = {"checkpoint": str(path), "step": int(ckpt["step"]), "weights": weights, "device": str(device)}
    payload = {**header, "cells": results, "skipped": skipped} if sweep else {**header, **results[0]}
    table = markdown_table(results)
    write_text_atomic(out_dir / "results.json", json.dumps(payload, indent=2) + "\n")
    write_text_atomic(out_dir / "results.md", table)
    print(table)
    for video in (v for cell in results for v in cell["videos"]):
        print(f"video: {video}")
    print(f"results: {out_dir / 'results.json'}")
    return payload


def unknown_option(argv: Sequence[str], config_name: str = "eval") -> str | None:
    """One line naming the first command-line key that configs/<config_name>.yaml lacks, with the valid keys beside it.

    Hydra lists the valid choices of a config group but not the valid keys of a config node, so the
    entry points check dotted keys first: the config is composed with the command line's group
    choices (``policy=transformer`` changes which ``policy.*`` keys exist) and each key is looked up.
    """
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except OverrideParseException:
        return None  # hydra reports syntax errors itself
    config_dir = CONFIG_PATH.parent
    is_choice = [not o.is_add() and (config_dir / o.key_or_group).is_dir() for o in overrides]
    choices = [o.input_line for o, choice in zip(overrides, is_choice) if choice]
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose(config_name, overrides=choices)
    except HydraException:
        return None  # hydra reports unknown group choices itself, with the valid ones
    for override, choice in zip(overrides, is_choice):
        key = override.key_or_group
        if choice or override.is_add() or key.startswith("hydra"):
            continue
        node, path = cfg, []
        for name in key.split("."):
            if node is None or (not path and name not in node.keys() and (config_dir / name).is_dir()):
                break  # an unset group (e.g. eval's sampler): hydra explains it
            if not isinstance(node, DictConfig) or name not in node.keys():
                where = f" under {'.'.join(path)}" if path else ""
                valid = ", ".join(str(k) for k in node.keys()) if isinstance(node, DictConfig) else "none (not a config node)"
                return f"unknown option {key!r}; valid options{where}: {valid}"
            node, path = OmegaConf.select(node, name, throw_on_resolution_failure=False), [*path, name]
    return None


@hydra.main(version_base=None, config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (configs/eval.yaml); bad checkpoints and settings exit with a one-line error."""
    try:
        run(cfg)
    except ValueError as exc:  # CheckpointError, EvalError, bad device or sampler settings
        sys.exit(f"eval.py: error: {exc}")


if __name__ == "__main__":
    problem = unknown_option(sys.argv[1:])
    if problem is not None:
        sys.exit(f"eval.py: error: {problem}")
    main()
