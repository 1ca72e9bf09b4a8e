"""DDPM vs flow matching vs few-step models across denoising step counts: success, reward and latency against NFE.

For one task, trains a DDPM (epsilon) policy, a flow-matching policy and a shortcut model from scratch that share
everything else (backbone, observations, data, optimizer steps, seed) with train.py, distills a consistency model
from one of them (``--teacher``, for ``--distill-steps``, a budget of its own), then evaluates every (sampler, steps)
cell of each with policy.evaluation.evaluate on the same episode seeds (episode i of every cell is reset with
``--eval-seed + i``):

    DDPM model: ddpm at its full chain (100 steps), ddim and dpmsolver at --step-counts (default 1 2 4 8 16)
    flow model: euler, midpoint and heun at --step-counts (midpoint and heun cost 2 evaluations per step)
    shortcut model: shortcut at --step-counts (powers of two)
    consistency model: consistency (multistep consistency sampling) at --step-counts

NFE is the sampler's own count. With several --seeds every (objective, seed) is trained and evaluated, and the table
shows the mean and standard deviation across seeds (the 95% interval is Wilson's over the pooled episodes; latency
and actions/s are the median over seeds of each seed's value). Latency is per predict_action call (one chunk).

Usage (from the repo root):
    python benchmarks/bench_steps.py --task push_t --train-steps 3000 --seeds 0 --episodes 50 --obs state \\
        --n-envs 2 --reuse
Writes steps_<task>.json, steps_<task>.md and steps_<task>.png to --out (default benchmarks/results) and prints the
table; <task> is the task's own name, so ``--task metaworld task.name=drawer-open-v3`` writes steps_drawer-open-v3.*
(``--tag few_step``: steps_drawer-open-v3_few_step.*).
Run dirs are fixed (``<work-dir>/<task>/<objective>_seed<k>_<N>steps``, the consistency model's
``consistency-<teacher>_seed<k>_<N>steps``); with --reuse a finished checkpoint is not retrained, an interrupted one
resumes, and evaluated cells (kept in the run dir) are not re-run. ``--objectives`` picks the models.

Under ``torchrun --nproc_per_node=N benchmarks/bench_steps.py ...`` every model trains with DistributedDataParallel
over the N processes, the (seed, objective, sampler, steps) cells are split over them (rank r evaluates cells r,
r + N, ... of the cheap-first order) and rank 0 writes the one set of results.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data.atomic import atomic_path, write_text_atomic
from data.file_lock import FileLock
from envs.task_env import TaskEnv
from policy.checkpoint import checkpoint_config, load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.distillation import distillation_config
from policy.distributed import World, process_group
from policy.evaluation import evaluate, wilson_interval
from policy.optim import resolve_device
from results_io import RESULTS_DIR, write_json
from training_runs import (
    BenchmarkError,
    compose_train_config,
    existing_checkpoint,
    learning_curve,
    plot_learning_curves,
    run_training,
)

ROOT = Path(__file__).resolve().parents[1]

OBJECTIVES = ("ddpm", "flow", "shortcut", "consistency")  # the consistency model is distilled from a --teacher
TEACHERS = ("ddpm", "flow")
SAMPLERS = {  # swept at every step count
    "ddpm": ("ddim", "dpmsolver"),
    "flow": ("euler", "midpoint", "heun"),
    "shortcut": ("shortcut",),
    "consistency": ("consistency",),
}
FULL_CHAIN = ("ddpm", None)  # DDPM's ancestral sampler over the model's whole training chain, one cell
STEP_COUNTS = (1, 2, 4, 8, 16)
CELLS_FILE = "bench_steps_cells.json"  # evaluated cells kept in each run dir, for --reuse
SAME_MODEL_KEYS = (
    "task",
    "obs",
    "seed",
    "policy",
    "objective",
    "sampler",
    "training",
    "dataset",
    "ema",
    "rollout",
    "teacher",
)


def train_overrides(
    task: str, objective: str, seed: int, train_steps: int, obs: str, curve: tuple[int, int, int, int] = (0, 1, 1, 0)
) -> list[str]:
    """train.py overrides for one model of the study; the two objectives differ only in ``objective``.

    ``curve`` is (eval_every, episodes, n_envs, eval_seed) of the learning curve's rollouts during training
    (eval_every 0: none).
    """
    every, episodes, n_envs, eval_seed = curve
    return [
        f"task={task}",
        f"obs={obs}",
        f"objective={objective}",
        f"seed={seed}",
        f"training.max_steps={train_steps}",
        f"rollout.every={every}",
        f"rollout.n_episodes={episodes}",
        f"rollout.n_envs={n_envs}",
        f"rollout.seed={eval_seed}",
        "rollout.n_videos=0",
        f"name=steps_{task}_{objective}_seed{seed}",
    ]


def study_label(task: str, extra_overrides: Sequence[str]) -> str:
    """The task's own name after the overrides (``--task metaworld task.name=reach-v3``: reach-v3), for file names."""
    return str(compose_train_config([f"task={task}", *extra_overrides]).task.name)


def run_dir_for(work_dir: Path, task: str, objective: str, seed: int, train_steps: int) -> Path:
    """The fixed run dir of one model: <work_dir>/<task>/<objective>_seed<k>_<N>steps."""
    return work_dir / task / f"{objective}_seed{seed}_{train_steps}steps"


def model_config(
    task: str,
    objective: str,
    seed: int,
    steps: int,
    obs: str,
    curve: tuple[int, int, int, int],
    extra_overrides: Sequence[str],
    teacher: Path | None = None,
) -> DictConfig:
    """train.py's config of one model; a consistency model distills ``teacher`` (its policy and noise process)."""
    overrides = [*train_overrides(task, objective, seed, steps, obs, curve), *extra_overrides]
    cfg, _ = distillation_config(
        compose_train_config(overrides if teacher is None else [*overrides, f"teacher={teacher}"])
    )
    return cfg


def train_model(cfg: DictConfig, run_dir: Path, reuse: bool, progress: bool = True) -> Path:
    """Train cfg's model in run_dir and return its final checkpoint; with reuse, a finished one is kept."""
    ckpt = existing_checkpoint(cfg, run_dir, reuse, SAME_MODEL_KEYS)
    if ckpt is not None and ckpt["step"] >= cfg.training.max_steps:
        latest = run_dir / "checkpoints" / "latest.ckpt"
        print(f"reusing {latest} (step {ckpt['step']})")
        return latest
    summary = run_training(cfg, run_dir, progress=progress)
    if summary["stopped_by"]:
        raise KeyboardInterrupt(f"training stopped by {summary['stopped_by']} at step {summary['step']}")
    return Path(summary["latest"])


def planned_cells(objective: str, step_counts: Sequence[int], full_chain: bool = True) -> list[tuple[str, int | None]]:
    """The (sampler, num_steps) cells evaluated for a model of this objective (None: the full DDPM chain)."""
    if objective not in SAMPLERS:
        raise BenchmarkError(f"objective {objective!r} is unknown; choose one of {list(SAMPLERS)}")
    cells = [FULL_CHAIN] if objective == "ddpm" and full_chain else []
    return cells + [(name, n) for name in SAMPLERS[objective] for n in step_counts]


def evaluation_rank(cell: tuple[str, int | None]) -> float:
    """Cheap cells first (by step count, full DDPM chain last), so a cut-short study has whole columns."""
    return math.inf if cell[1] is None else cell[1]


def cell_key(sampler: str, num_steps: int | None, episodes: int, n_envs: int, eval_seed: int, step: int) -> str:
    """Identifies an evaluated cell in a run dir's cell cache."""
    return f"{sampler}|{num_steps}|{episodes}|{n_envs}|{eval_seed}|{step}"


def evaluate_model(
    checkpoint: Path,
    cells: Sequence[tuple[str, int | None]],
    *,
    episodes: int,
    n_envs: int,
    eval_seed: int,
    reuse: bool,
    device: torch.device,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every cell of a checkpoint (EMA weights) on episodes seeded eval_seed + i; cached in its run dir."""
    ckpt = load_checkpoint(checkpoint, map_location=device)
    task = TaskEnv.from_config(checkpoint_config(ckpt)["task"])
    policy = ChunkPolicy.from_checkpoint(checkpoint, loaded=ckpt).to(device)
    cache_path = checkpoint.parent.parent / CELLS_FILE
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    results = []
    for sampler, num_steps in cells:
        key = cell_key(sampler, num_steps, episodes, n_envs, eval_seed, int(ckpt["step"]))
        if not (reuse and key in cache):
            result = evaluate(
                policy,
                task,
                n_episodes=episodes,
                n_envs=n_envs,
                seed=eval_seed,
                sampler=sampler,
                num_steps=num_steps,
                progress=progress,
            )
            cache[key] = {k: v for k, v in result.items() if k != "videos"}
            with FileLock(cache_path.with_suffix(".lock")).acquire(timeout=None):  # other ranks add cells too
                stored = (
                    json.loads(cache_path.read_text()) if cache_path.exists() else {}
                )  # cells another run added meanwhile
                write_json(cache_path, {**stored, key: cache[key]})
        results.append(cache[key])
    return results


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (objective, sampler, steps): success, reward and latency over the seeds' evaluations of that cell."""
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for run in runs:
        for cell in run["cells"]:
            groups.setdefault((run["objective"], cell["sampler"], cell["num_steps"]), []).append(cell)
    rows = []
    for (objective, sampler, steps), cells in groups.items():
        successes = sum(sum(bool(e["success"]) for e in c["episodes"]) for c in cells)
        n = sum(c["n_episodes"] for c in cells)
        success, success_sd = mean_sd([c["success_rate"] for c in cells])
        reward, reward_sd = mean_sd([c["mean_max_reward"] for c in cells])
        scores = [c["normalized_score"] for c in cells if c.get("normalized_score") is not None]
        score, score_sd = mean_sd(scores) if scores else (None, None)
        rows.append(
            {
                "objective": objective,
                "sampler": sampler,
                "num_steps": steps,
                "nfe": cells[0]["nfe"],
                "n_seeds": len(cells),
                "n_episodes": n,
                "success_rate": success,
                "success_sd": success_sd,
                "success_ci95_pooled": list(wilson_interval(successes, n)),
                "mean_max_reward": reward,
                "mean_max_reward_sd": reward_sd,
                "normalized_score": score,  # tasks whose success is a reward threshold (PushT), else None
                "normalized_score_sd": score_sd,
                "latency_ms_median": statistics.median(c["latency_ms"]["median"] for c in cells),
                "latency_ms_p90": statistics.median(c["latency_ms"]["p90"] for c in cells),
                "actions_per_s": statistics.median(c["actions_per_s"] for c in cells),
            }
        )
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], caption: str) -> str:
    """The study's Markdown table (a caption line, then one row per (objective, sampler, steps))."""
    several = any(r["n_seeds"] > 1 for r in rows)
    scored = any(r.get("normalized_score") is not None for r in rows)
    spread = " ± sd over seeds" if several else ""
    score_head = f"normalized score{spread} | " if scored else ""
    lines = [
        caption,
        "",
        f"| objective | sampler | steps | NFE | success{spread} (95% CI) | mean max reward{spread} | {score_head}"
        "latency ms / chunk (median / p90) | actions/s |",
        "|---|---|---:|---:|---|---:|" + ("---:|" if scored else "") + "---|---:|",
    ]
    for r in rows:
        low, high = r["success_ci95_pooled"]
        success = f"{r['success_rate']:.2f}" + (f" ± {r['success_sd']:.2f}" if several else "")
        reward = f"{r['mean_max_reward']:.3f}" + (f" ± {r['mean_max_reward_sd']:.3f}" if several else "")
        score = ""
        if scored:
            score = f"{r['normalized_score']:.3f}" + (f" ± {r['normalized_score_sd']:.3f}" if several else "") + " | "
        lines.append(
            f"| {r['objective']} | {r['sampler']} | {r['num_steps']} | {r['nfe']} | "
            f"{success} ({low:.2f}-{high:.2f}) | {reward} | {score}"
            f"{r['latency_ms_median']:.1f} / {r['latency_ms_p90']:.1f} | {r['actions_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], title: str, out: Path) -> None:
    """Panels against NFE (log x): success rate with its 95% CI, median latency per chunk and, for tasks that
    report one (PushT), the normalized score; PNG at out.

    On the success panel each line is shifted by a few percent in NFE so that overlapping intervals stay readable.
    The score panel is there because a short budget can leave every PushT success near 0 while coverage differs.
    """
    scored = all(r.get("normalized_score") is not None for r in rows)
    fig = Figure(figsize=(16 if scored else 11, 4.2))  # no pyplot: no GUI backend, no global figure registry
    axes = fig.subplots(1, 3 if scored else 2)
    ax_success, ax_latency = axes[0], axes[-1]
    lines: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["objective"], r["sampler"]), []).append(r)
    for k, ((objective, sampler), points) in enumerate(lines.items()):
        points = sorted(points, key=lambda r: r["nfe"])
        nfe = np.array([r["nfe"] for r in points], dtype=float)
        success = np.array([r["success_rate"] for r in points])
        ci = np.array([r["success_ci95_pooled"] for r in points])
        single = len(points) == 1
        style = dict(
            marker="*" if single else "o",
            markersize=11 if single else 5,
            linestyle="--" if objective == "ddpm" else "-",
            label=f"{objective} / {sampler}" + (f"-{points[0]['num_steps']}" if single else ""),
        )
        dodge = 1.04 ** (k - (len(lines) - 1) / 2)
        yerr = np.clip([success - ci[:, 0], ci[:, 1] - success], 0, None)  # Wilson bounds can miss 0 or 1 by rounding
        line = ax_success.errorbar(nfe * dodge, success, yerr=yerr, capsize=2, elinewidth=0.8, **style)
        ax_latency.plot(nfe, [r["latency_ms_median"] for r in points], color=line[0].get_color(), **style)
        if scored:
            axes[1].plot(nfe, [r["normalized_score"] for r in points], color=line[0].get_color(), **style)
    ticks = sorted({r["nfe"] for r in rows})
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("NFE (network evaluations per chunk)")
        ax.grid(True, which="major", alpha=0.3)
    ax_latency.set_yscale("log")
    ax_latency.yaxis.set_major_formatter(ScalarFormatter())
    ax_latency.yaxis.set_minor_formatter(NullFormatter())
    ax_success.set(ylabel="success rate (95% CI)", ylim=(-0.03, 1.03), title=f"{title}: success")
    ax_latency.set(ylabel="latency per chunk, median (ms)", title=f"{title}: latency")
    if scored:
        axes[1].set(ylabel="normalized score (max coverage / 0.95)", ylim=(-0.03, 1.03), title=f"{title}: score")
    ax_success.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)


def run_study(
    task: str,
    *,
    train_steps: int,
    seeds: Sequence[int],
    episodes: int,
    obs: str = "state",
    out: Path = RESULTS_DIR,
    work_dir: Path = ROOT / "outputs" / "bench_steps",
    n_envs: int = 1,
    eval_seed: int = 100000,
    step_counts: Sequence[int] = STEP_COUNTS,
    full_chain: bool = True,
    reuse: bool = False,
    extra_overrides: Sequence[str] = (),
    eval_every: int = 0,
    curve_episodes: int = 20,
    objectives: Sequence[str] = OBJECTIVES,
    teacher: str = "flow",
    distill_steps: int | None = None,
    tag: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Train (and distill) every objective for every seed, evaluate all cells, write steps_<task>.{json,md,png}.

    The consistency model is distilled from the ``teacher`` model of the same seed for ``distill_steps`` (default
    ``train_steps``). With ``eval_every`` > 0 each model is also rolled out every that many training steps with its
    default sampler on ``curve_episodes`` episodes: its learning curve, plotted to steps_<task>_curves.png.
    """
    distill_steps = train_steps if distill_steps is None else distill_steps
    if train_steps < 1 or distill_steps < 1 or episodes < 1 or n_envs < 1 or not seeds or not step_counts:
        raise BenchmarkError(
            f"--train-steps={train_steps}, --distill-steps={distill_steps}, --episodes={episodes} and "
            f"--n-envs={n_envs} must be >= 1, with at least one --seeds and --step-counts"
        )
    if min(step_counts) < 1:
        raise BenchmarkError(f"every --step-counts {list(step_counts)} must be >= 1")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise BenchmarkError(f"--objectives {list(objectives)}: choose from {list(OBJECTIVES)}")
    if "consistency" in objectives and teacher not in objectives:
        raise BenchmarkError(f"the consistency model distills the {teacher} model: add {teacher} to --objectives")
    objectives = [o for o in OBJECTIVES if o in objectives]  # teachers train before their students
    label = study_label(task, extra_overrides)
    start = time.perf_counter()
    checkpoints = {}
    curve = (eval_every, curve_episodes, n_envs, eval_seed)
    for seed in seeds:
        for objective in objectives:
            if objective == "consistency":
                distilled = (task, objective, seed, distill_steps, obs, curve, extra_overrides)
                cfg = model_config(*distilled, teacher=checkpoints[seed, teacher])
                run_dir = run_dir_for(Path(work_dir), label, f"consistency-{teacher}", seed, distill_steps)
            else:
                cfg = model_config(task, objective, seed, train_steps, obs, curve, extra_overrides)
                run_dir = run_dir_for(Path(work_dir), label, objective, seed, train_steps)
            checkpoints[seed, objective] = train_model(cfg, run_dir, reuse, progress)
    evaluated: dict[tuple[int, str, str, int | None], dict[str, Any]] = {}
    world = World.current()
    for seed in seeds:
        order = [
            (objective, cell) for objective in objectives for cell in planned_cells(objective, step_counts, full_chain)
        ]
        order.sort(key=lambda item: evaluation_rank(item[1]))
        mine = order[world.rank :: world.size]
        for objective, (sampler, n) in tqdm(mine, desc=f"cells seed {seed}", disable=not (progress and world.is_main)):
            (evaluated[seed, objective, sampler, n],) = evaluate_model(
                checkpoints[seed, objective],
                [(sampler, n)],
                episodes=episodes,
                n_envs=n_envs,
                eval_seed=eval_seed,
                reuse=reuse,
                device=world.device(resolve_device(cfg.device)),
                progress=progress and world.is_main,
            )
    evaluated = {key: cell for part in world.all_gather(evaluated) for key, cell in part.items()}
    runs = [
        {
            "objective": objective,
            "seed": seed,
            "checkpoint": str(checkpoints[seed, objective]),
            "learning_curve": learning_curve(checkpoints[seed, objective].parent.parent),
            "cells": [
                evaluated[(seed, objective, *cell)] for cell in planned_cells(objective, step_counts, full_chain)
            ],
        }
        for seed in seeds
        for objective in objectives
    ]
    rows = aggregate(runs)
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    denoiser = policy_cfg["denoiser"]["_target_"].rsplit(".", 1)[-1] + f" {policy_cfg['denoiser'].get('down_dims', '')}"
    distilled = (
        f", the consistency model distilled from the {teacher} model of its seed for {distill_steps} steps"
        if "consistency" in objectives
        else ""
    )
    caption = (
        f"**{label}**, {obs} observations, {denoiser.strip()}, horizon {policy_cfg['horizon']}, "
        f"{policy_cfg['n_action_steps']} actions per chunk; {train_steps} training steps (batch "
        f"{cfg.training.batch_size}) per model trained from scratch{distilled}, training seeds {list(seeds)}, "
        f"{episodes} episodes per cell (seeds {eval_seed}..{eval_seed + episodes - 1}), {resolve_device(cfg.device)}, "
        f"{torch.get_num_threads()} torch thread(s); latency is per predict_action call, batched over "
        f"{n_envs} env(s)."
    )
    table = markdown_table(rows, caption)
    payload = {
        "task": label,
        "task_config": task,
        "obs": obs,
        "train_steps": train_steps,
        "objectives": list(objectives),
        "teacher": teacher if "consistency" in objectives else None,
        "distill_steps": distill_steps if "consistency" in objectives else None,
        "seeds": list(seeds),
        "episodes": episodes,
        "eval_seed": eval_seed,
        "n_envs": n_envs,
        "step_counts": list(step_counts),
        "extra_overrides": list(extra_overrides),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_time_s": time.perf_counter() - start,
        "rows": rows,
        "runs": runs,
    }
    if not world.is_main:
        return payload
    out = Path(out)
    stem = f"steps_{label}_{tag}" if tag else f"steps_{label}"
    payload["files"] = f"{stem}.{{json,md,png}}"
    write_json(out / f"{stem}.json", payload)
    write_text_atomic(out / f"{stem}.md", table)
    plot(rows, label, out / f"{stem}.png")
    if eval_every > 0:
        lines = [(f"{r['objective']} seed {r['seed']}", r["learning_curve"]) for r in runs]
        plot_learning_curves({f"{label} ({obs}), default sampler": lines}, out / f"{stem}_curves.png")
    return payload


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="push_t", help="configs/task/<name>.yaml")
    parser.add_argument("--train-steps", type=int, default=3000, help="optimizer steps per model trained from scratch")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="training seeds (one model per objective each)"
    )
    parser.add_argument(
        "--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES, help="the models of the study"
    )
    parser.add_argument("--teacher", default="flow", choices=TEACHERS, help="the model the consistency model distills")
    parser.add_argument(
        "--distill-steps", type=int, default=None, help="optimizer steps of the distillation (default: --train-steps)"
    )
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per (sampler, steps) cell")
    parser.add_argument("--obs", default="state", choices=["state", "image"], help="policy observations")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where steps_<task>.{json,md,png} go")
    parser.add_argument("--tag", default="", help="names the results steps_<task>_<tag>.* (e.g. few_step)")
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / "outputs" / "bench_steps", help="run dirs of the models"
    )
    parser.add_argument("--n-envs", type=int, default=1, help="parallel envs per evaluation")
    parser.add_argument("--eval-seed", type=int, default=100000, help="episode i of every cell is reset with this + i")
    parser.add_argument("--step-counts", type=int, nargs="+", default=list(STEP_COUNTS), help="sampler steps to sweep")
    parser.add_argument(
        "--eval-every", type=int, default=500, help="training steps between learning-curve rollouts (0: none)"
    )
    parser.add_argument("--curve-episodes", type=int, default=20, help="episodes per learning-curve rollout")
    parser.add_argument(
        "--full-chain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also evaluate DDPM's ancestral sampler over its whole training chain (the costliest cell)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep finished checkpoints and evaluated cells in --work-dir"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=1800, help="torchrun runs: seconds a rank waits for the others' cells"
    )
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every model, e.g. policy.horizon=8")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the study and print its table; under torchrun in its process group, rank 0 printing."""
    args = parse_args(argv)
    torch.set_num_threads(1)  # the machine is shared; one core per study
    world = World.from_env()
    device = world.device(resolve_device(compose_train_config([f"task={args.task}", *args.overrides]).device))
    with process_group(world, device, args.timeout_s):
        study(args, world)


def study(args: argparse.Namespace, world: World) -> None:
    """``run_study`` with the command line's arguments; one-line errors."""
    try:
        payload = run_study(
            args.task,
            train_steps=args.train_steps,
            seeds=args.seeds,
            episodes=args.episodes,
            obs=args.obs,
            out=args.out,
            work_dir=args.work_dir,
            n_envs=args.n_envs,
            eval_seed=args.eval_seed,
            step_counts=args.step_counts,
            full_chain=args.full_chain,
            reuse=args.reuse,
            extra_overrides=args.overrides,
            eval_every=args.eval_every,
            curve_episodes=args.curve_episodes,
            objectives=args.objectives,
            teacher=args.teacher,
            distill_steps=args.distill_steps,
            tag=args.tag,
        )
    except BenchmarkError as exc:
        sys.exit(f"bench_steps.py: error: {world.prefix}{exc}")
    except KeyboardInterrupt:
        sys.exit("bench_steps.py: stopped; rerun with --reuse to continue (finished models and cells are kept)")
    if world.is_main:
        print((args.out / payload["files"].replace("{json,md,png}", "md")).read_text())
        print(f"wall time {payload['wall_time_s'] / 60:.1f} min; results in {args.out}/{payload['files']}")


if __name__ == "__main__":
    main()
