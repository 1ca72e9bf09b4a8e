"""Evaluate a checkpoint in its task's env: python eval.py checkpoint=PATH n_episodes=50 n_envs=4 sampler=ddim

    python eval.py checkpoint=PATH sweep.samplers=[ddpm,ddim,dpmsolver] sweep.num_steps=[1,2,4,8,16,100]
    python eval.py checkpoint=PATH sampler.num_steps=4   # the checkpoint's own sampler with 4 steps
    python eval.py checkpoint=PATH n_action_steps=2      # replan after 2 executed actions instead of the trained count
    python eval.py checkpoint=PATH execution=rtc inference_delay=auto   # real-time chunking at the measured delay
    python eval.py checkpoint=PATH instruction="put the cube in the left bin" guidance_scale=2   # CFG
    python eval.py checkpoint=PATH tasks=all   # a multi-task checkpoint: each task with its own instruction

The hydra entry point over ``policy.evaluation``: the checkpoint alone is enough (its stored config names
the task: env id, env kwargs, episode length, fps). Writes results.json, results.md and the videos into
``out_dir``. ``torchrun --nproc_per_node=N eval.py ...`` splits a sweep's cells over N processes (rank r
evaluates cells r, r + N, ...); rank 0 writes the one results.json, identical to a single process's.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from configs import unknown_option
from data.atomic import write_json_atomic, write_text_atomic
from data.multitask import subtask_config
from envs.task_env import TaskEnv
from policy.checkpoint import CheckpointError, checkpoint_config, load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.distributed import World, process_group
from policy.evaluation import EvalError, cell_problem, evaluate, markdown_table, resolve_sampler
from policy.execution import Execution
from policy.optim import resolve_device
from policy.samplers import Sampler


def default_out_dir(checkpoint: Path, label: str) -> Path:
    """<run dir>/eval/<time>_<label>; the run dir is the checkpoint's parent, or its grandparent under checkpoints/."""
    parent = checkpoint.resolve().parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / "eval" / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}_{label}"


def build_execution(cfg: DictConfig) -> Execution:
    """The Execution of configs/execution/<name>.yaml (cfg.execution) with cfg.inference_delay; EvalError if invalid."""
    settings = OmegaConf.to_container(cfg.execution, resolve=True)
    strategy = settings.pop("name")
    try:
        return Execution(strategy=strategy, delay=cfg.inference_delay, **settings)
    except ValueError as exc:
        raise EvalError(str(exc)) from exc


def set_n_action_steps(policy: ChunkPolicy, n: int | None) -> None:
    """Execute ``n`` actions of each chunk before replanning (None keeps the checkpoint's); EvalError if out of range.

    Replanning is an inference choice, so a trained model runs at any n its chunk covers: 1..H - n_obs_steps + 1.
    """
    if n is None:
        return
    most = policy.horizon - policy.n_obs_steps + 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
        raise EvalError(
            f"n_action_steps must be an int in 1..{most} for this checkpoint (horizon {policy.horizon}, "
            f"{policy.n_obs_steps} observation steps); got {n!r}"
        )
    policy.n_action_steps = n


def plan_cells(
    policy: ChunkPolicy, cfg: DictConfig, execution: Execution | None = None
) -> tuple[list[tuple[Sampler, int | None]], list[str]]:
    """The (sampler, num_steps) cells to run and the notes on skipped invalid pairs."""
    chosen = "_target_" in cfg.sampler  # sampler=<name> picked a configs/sampler group; else only num_steps is set
    try:
        if cfg.sweep.samplers:
            samplers = [resolve_sampler(policy, str(name)) for name in cfg.sweep.samplers]
        else:
            samplers = [resolve_sampler(policy, instantiate(cfg.sampler) if chosen else None)]
    except (ValueError, InstantiationException) as exc:  # unknown sampler name or bad sampler setting
        raise EvalError(f"sampler: {exc.__cause__ or exc}") from exc
    own_steps = None if chosen or cfg.sampler.num_steps is None else int(cfg.sampler.num_steps)
    steps = [int(n) for n in cfg.sweep.num_steps] or [own_steps]
    cells, skipped = [], []
    for sampler in samplers:
        for n in steps:
            problem = cell_problem(policy, sampler, n, execution)
            if problem is None:
                cells.append((sampler, n))
            else:
                skipped.append(f"{sampler.name} x {n if n is not None else 'default'} steps: {problem}")
    if not cells:
        raise EvalError(f"no valid (sampler, num_steps) pair to evaluate: {'; '.join(skipped)}")
    return cells, skipped


def plan_targets(cfg: DictConfig, task_cfg: dict[str, Any], policy: ChunkPolicy) -> list[tuple[str | None, Any, Any]]:
    """(task name or None, TaskEnv, instruction) to evaluate: the checkpoint's task, or each of ``tasks``; EvalError."""
    if not cfg.tasks:
        return [(None, TaskEnv.from_config(task_cfg), cfg.instruction)]
    if cfg.instruction is not None:
        raise EvalError("tasks= evaluates each task with its own training instruction; drop instruction= (or tasks=)")
    known = task_cfg.get("tasks") or {}
    instructions = ((policy.instruction_config or {}).get("tasks")) or {}
    if not known or not instructions:
        raise EvalError(
            f"tasks= needs a multi-task, instruction-conditioned checkpoint (task.tasks and its instructions); "
            f"{task_cfg.get('name')} is a single task: evaluate it without tasks="
        )
    names = list(known) if cfg.tasks == "all" else [str(t) for t in cfg.tasks]
    unknown = [n for n in names if n not in known or n not in instructions]
    if unknown:
        raise EvalError(f"tasks {unknown} are not this checkpoint's; choose from {sorted(known)} or tasks=all")
    return [(n, TaskEnv.from_config(subtask_config(task_cfg, n)), instructions[n]) for n in names]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint, evaluate every cell, write results.json and results.md; returns what was written."""
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise EvalError(
            "checkpoint= is required, e.g. eval.py checkpoint=outputs/<date>/<time>_<name>/checkpoints/latest.ckpt"
        )
    world = World.current()
    device = world.device(resolve_device(cfg.device))
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    path = Path(cfg.checkpoint)
    ckpt = load_checkpoint(path, map_location=device)
    task_cfg = checkpoint_config(ckpt).get("task")
    if not isinstance(task_cfg, dict):
        raise CheckpointError(f"checkpoint {path} has no task section in its config; it was not written by train.py")
    policy = ChunkPolicy.from_checkpoint(path, use_ema=cfg.use_ema, loaded=ckpt).to(device)
    set_n_action_steps(policy, cfg.n_action_steps)
    targets = plan_targets(cfg, task_cfg, policy)
    execution = build_execution(cfg)
    if cfg.temporal_ensemble_k is not None and execution.strategy != "sync":
        raise EvalError(f"temporal_ensemble_k needs execution=sync (it replans every step); got {execution.strategy}")
    cells, skipped = plan_cells(policy, cfg, execution)
    sweep = bool(cfg.sweep.samplers or cfg.sweep.num_steps) or len(targets) > 1
    first_sampler, first_steps = cells[0]
    label = "sweep" if sweep else f"{first_sampler.name}-{first_sampler.resolve_steps(policy.objective, first_steps)}"
    if execution.strategy != "sync":
        label += f"_{execution.strategy}-d{execution.delay}"
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else default_out_dir(path, label)
    out_dir = Path(world.broadcast(str(out_dir)))  # rank 0's time-stamped directory
    out_dir.mkdir(parents=True, exist_ok=True)
    for note in skipped if world.is_main else []:
        print(f"skipped {note}")

    runs = [(target, cell) for target in targets for cell in cells]
    results = []
    for (task_name, task, instruction), (sampler, n) in runs[world.rank :: world.size]:
        name = f"{sampler.name}-{sampler.resolve_steps(policy.objective, n)}"
        name = name if task_name is None else f"{task_name}/{name}"
        results.append(
            evaluate(
                policy,
                task,
                n_episodes=cfg.n_episodes,
                n_envs=cfg.n_envs,
                seed=cfg.seed,
                sampler=sampler,
                num_steps=n,
                out_dir=out_dir / name if sweep else out_dir,
                n_videos=cfg.n_videos,
                temporal_ensemble_k=cfg.temporal_ensemble_k,
                execution=execution,
                progress=cfg.progress and world.is_main,
                instruction=instruction,
                guidance_scale=cfg.guidance_scale,
            )
        )
        delay = "" if execution.strategy == "sync" else f" ({execution.strategy}, d={results[-1]['inference_delay']})"
        print(
            f"{name}{delay}: success {results[-1]['success_rate']:.2f} in {results[-1]['wall_time_s']:.1f} s",
            file=sys.stderr,
        )
    parts = world.all_gather(results)  # rank r evaluated cells r, r + N, ...
    results = [parts[i % world.size][i // world.size] for i in range(len(runs))]
    weights = "ema" if cfg.use_ema and ckpt.get("ema") is not None else "model"
    header = {"checkpoint": str(path), "step": int(ckpt["step"]), "weights": weights, "device": str(device)}
    payload = {**header, "cells": results, "skipped": skipped} if sweep else {**header, **results[0]}
    table = markdown_table(results)
    if not world.is_main:
        return payload
    write_json_atomic(out_dir / "results.json", payload)
    write_text_atomic(out_dir / "results.md", table)
    print(table)
    for video in (v for cell in results for v in cell["videos"]):
        print(f"video: {video}")
    print(f"results: {out_dir / 'results.json'}")
    return payload


@hydra.main(version_base=None, config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (configs/eval.yaml); bad checkpoints and settings exit with a one-line error (rank 0's)."""
    world = World.from_env()
    try:
        with process_group(world, world.device(resolve_device(cfg.device)), cfg.distributed.timeout_s):
            run(cfg)
    except ValueError as exc:  # CheckpointError, EvalError, bad device or sampler settings: the same on every rank
        sys.exit(f"eval.py: error: {exc}" if world.is_main else 1)


def cli() -> None:
    """``python eval.py`` and the ``actchunk-eval`` command: unknown options are named before hydra runs."""
    problem = unknown_option(sys.argv[1:], "eval")
    if problem is not None:
        sys.exit(f"eval.py: error: {problem}")
    main()


if __name__ == "__main__":
    cli()
