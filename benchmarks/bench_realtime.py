"""Real-time execution: success and chunk-switch smoothness of every execution strategy against inference delay.

For each checkpoint (``--model LABEL=PATH``; the task comes from the checkpoint) this evaluates, on the same
``--episodes`` episode seeds (``--eval-seed + i``) and the same policy noise seed:

    sync                  the world waits for every chunk (the reference; the delay does not apply)
    temporal_ensemble     ACT's temporal ensembling (sync, one plan per step, weights exp(-k i))
    async_naive, async_blend, rtc   at every d of ``--delays`` (default 0 1 2 4 6) and at d = auto, the measured
                          chunk latency of that strategy on this CPU (batch 1) times the task's control rate

all with execution horizon ``--execution-horizon`` (default 8: n_action_steps of the recipes). Each cell reports
the success rate (Wilson 95% interval), mean max reward (and PushT's normalized score), and the mean jump
|a_t - a_(t-1)| at chunk switches (Euclidean, action units) beside the mean jump within chunks. The goals of issue
#15 are checked as measured: RTC within 5 points of sync at d = 4, and a smaller switch jump than async_naive at
every d > 0.

Usage (from the repo root), with the recipes' checkpoints (make demo; bench_push_t.py --obs state --objectives
flow; bench_metaworld.py --tasks drawer-open-v3 --objectives flow):
    python benchmarks/bench_realtime.py --reuse \\
        --model pick_place_image=outputs/demo/train/checkpoints/latest.ckpt \\
        --model push_t_state=outputs/bench_push_t/state/flow_seed0/checkpoints/latest.ckpt \\
        --model drawer-open_image=outputs/bench_metaworld/drawer-open-v3/flow_seed0/checkpoints/latest.ckpt
(the MetaWorld model with horizon 16: the horizon-4 recipe's 3-action chunk has no room for s = 8 and d > 0).
Writes realtime.json, realtime.md and realtime.png (success and switch jump against d, one panel per model) to
--out (default benchmarks/results), rewritten after every cell. Finished cells are kept in
``<work-dir>/<label>.json``; with --reuse a rerun keeps those evaluated with the same checkpoint step and settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from data.atomic import atomic_path, write_text_atomic
from envs.task_env import TaskEnv
from policy.checkpoint import checkpoint_config, load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.evaluation import EvalError, evaluate
from policy.execution import Execution
from policy.rtc import MASK_SCHEDULES
from results_io import RESULTS_DIR, write_json
from training_runs import BenchmarkError

ROOT = Path(__file__).resolve().parents[1]
ASYNC = ("async_naive", "async_blend", "rtc")
DELAYS = (0, 1, 2, 4, 6)
GOAL_DELAY = 4  # RTC's success within GOAL_POINTS of sync at this delay
GOAL_POINTS = 0.05
CELL_KEYS = ("n_episodes", "success_rate", "success_ci95", "mean_max_reward", "normalized_score", "mean_length")
CELL_KEYS += ("switch_jump", "within_jump", "n_switches", "latency_ms", "wall_time_s", "auto_delay_latency_ms")
CELL_KEYS += ("inference_delay", "execution_horizon", "sampler", "num_steps", "n_errors")


def planned_cells(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The cells of one model: sync, temporal ensembling, then every async strategy at every delay and at auto."""
    cells: list[dict[str, Any]] = [{"execution": "sync", "delay": 0}]
    if not args.no_temporal_ensemble:
        cells.append({"execution": "temporal_ensemble", "delay": 0})
    delays = [*args.delays, *([] if args.no_auto else ["auto"])]
    cells += [{"execution": strategy, "delay": d} for strategy in args.strategies for d in delays]
    return cells


def cell_execution(cell: Mapping[str, Any], args: argparse.Namespace) -> tuple[Execution, float | None]:
    """(Execution, temporal_ensemble_k) of a planned cell with the benchmark's parameters."""
    if cell["execution"] == "temporal_ensemble":
        return Execution(horizon=args.execution_horizon), args.te_k
    strategy = cell["execution"]
    execution = Execution(strategy, delay=cell["delay"], horizon=args.execution_horizon)
    return dataclasses.replace(execution, beta=args.beta, mask=args.mask, new_weight=args.blend_weight), None


def cell_key(cell: Mapping[str, Any], step: int, args: argparse.Namespace) -> str:
    """What a cached cell must have been evaluated with to be reused (checkpoint step, episodes, parameters)."""
    params = f"s{args.execution_horizon}_b{args.beta}_{args.mask}_w{args.blend_weight}_k{args.te_k}"
    episodes = f"{args.episodes}x{args.eval_seed}_{args.max_episode_steps}_{args.sampler}-{args.num_steps}"
    return f"{cell['execution']}_d{cell['delay']}_step{step}_{episodes}_{params}"


def evaluate_model(label: str, path: Path, args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    """Every planned cell of one checkpoint (cached in <work-dir>/<label>.json, rewritten after each cell)."""
    if not path.exists():
        raise BenchmarkError(f"checkpoint {path} of --model {label} does not exist")
    ckpt = load_checkpoint(path)
    config = checkpoint_config(ckpt)
    task_cfg = dict(config["task"])
    if args.max_episode_steps is not None:
        task_cfg["max_episode_steps"] = args.max_episode_steps
    task = TaskEnv.from_config(task_cfg)
    policy = ChunkPolicy.from_checkpoint(path, loaded=ckpt)
    cache_path = Path(args.work_dir) / f"{label}.json"
    cache = _read_cache(cache_path, args.reuse)
    cells = []
    for cell in tqdm(planned_cells(args), desc=label, disable=not progress, leave=False):
        key = cell_key(cell, int(ckpt["step"]), args)
        if key not in cache:
            execution, te_k = cell_execution(cell, args)
            try:
                result = evaluate(
                    policy,
                    task,
                    n_episodes=args.episodes,
                    n_envs=args.n_envs,
                    seed=args.eval_seed,
                    sampler=args.sampler,
                    num_steps=args.num_steps,
                    temporal_ensemble_k=te_k,
                    execution=execution,
                    progress=False,
                )
                cache[key] = {k: result[k] for k in CELL_KEYS} | {"seeds": [e["seed"] for e in result["episodes"]]}
            except EvalError as exc:  # e.g. an auto delay too long for the chunk: reported, not run
                cache[key] = {"skipped": str(exc)}
            write_json(cache_path, cache)
        cells.append({**cell, **cache[key]})
    return {
        "label": label,
        "checkpoint": str(path),
        "step": int(ckpt["step"]),
        "task": task.env_id,
        "fps": task.fps,
        "objective": type(policy.objective).__name__,
        "horizon": policy.horizon,
        "n_obs_steps": policy.n_obs_steps,
        "n_action_steps": policy.n_action_steps,
        "cells": cells,
        "goals": goals(cells),
    }


def _read_cache(path: Path, reuse: bool) -> dict[str, Any]:
    """The cached cells at path ({} if none); BenchmarkError if it exists and --reuse was not given."""
    if not path.exists():
        return {}
    if not reuse:
        raise BenchmarkError(f"{path} holds evaluated cells; pass --reuse to keep them or delete it")
    return json.loads(path.read_text())


def goals(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Issue #15's goals as measured: RTC vs sync success at d = 4, RTC vs async_naive switch jump at each d > 0."""
    ran = {(c["execution"], c["delay"]): c for c in cells if "skipped" not in c}
    sync, rtc = ran.get(("sync", 0)), ran.get(("rtc", GOAL_DELAY))
    gap = None if sync is None or rtc is None else rtc["success_rate"] - sync["success_rate"]
    smoother = {}
    for (strategy, d), cell in ran.items():
        naive = ran.get(("async_naive", d))
        if strategy == "rtc" and d != "auto" and d > 0 and naive is not None:
            if cell["switch_jump"] is not None and naive["switch_jump"] is not None:
                smoother[str(d)] = cell["switch_jump"] < naive["switch_jump"]
    return {
        "rtc_minus_sync_success_at_d4": gap,
        "rtc_within_5_points_at_d4": None if gap is None else gap >= -GOAL_POINTS,
        "rtc_smaller_jump_than_naive": smoother,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or '-'."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_report(payload: Mapping[str, Any]) -> str:
    """One table per model (a row per cell) and the goals as measured."""
    lines = [f"Command: `{payload['command']}`", "", f"Machine: {payload['machine']}; wall time {payload['wall']}", ""]
    for model in payload["models"]:
        scored = any(c.get("normalized_score") is not None for c in model["cells"])
        lines += [
            f"### {model['label']} ({model['task']}, {model['objective']}, step {model['step']}, {model['fps']} fps, "
            f"horizon {model['horizon']}, n_obs_steps {model['n_obs_steps']}, "
            f"n_action_steps {model['n_action_steps']})",
            "",
            "| execution | d | success (95% CI) | max reward | "
            + ("normalized score | " if scored else "")
            + "switch jump | within jump | switches | latency ms (median) | auto: measured ms | wall s |",
            "|---|---:|---|---:|" + ("---:|" if scored else "") + "---:|---:|---:|---:|---:|---:|",
        ]
        for c in model["cells"]:
            name = c["execution"]
            if "skipped" in c:
                lines.append(f"| {name} | {c['delay']} | skipped: {c['skipped']} |")
                continue
            low, high = c["success_ci95"]
            d = f"auto = {c['inference_delay']}" if c["delay"] == "auto" else str(c["delay"])
            score = f"{_fmt(c.get('normalized_score'))} | " if scored else ""
            lines.append(
                f"| {name} | {d} | {c['success_rate']:.2f} ({low:.2f}-{high:.2f}) | {c['mean_max_reward']:.3f} | "
                f"{score}{_fmt(c['switch_jump'], 4)} | {_fmt(c['within_jump'], 4)} | {c['n_switches']} | "
                f"{_fmt(c['latency_ms']['median'], 1)} | {_fmt(c['auto_delay_latency_ms'], 1)} | "
                f"{c['wall_time_s']:.1f} |"
            )
        g = model["goals"]
        smoother = ", ".join(f"d={d}: {'yes' if ok else 'no'}" for d, ok in g["rtc_smaller_jump_than_naive"].items())
        gap = g["rtc_minus_sync_success_at_d4"]
        verdict = "not run" if gap is None else "met" if g["rtc_within_5_points_at_d4"] else "missed"
        lines += [
            "",
            f"Goals: RTC - sync success at d={GOAL_DELAY}: {_fmt(gap, 2)} ({verdict}, goal >= -{GOAL_POINTS}); "
            f"RTC switch jump below async_naive's: {smoother or 'not run'}.",
            "",
        ]
    return "\n".join(lines)


def plot(payload: Mapping[str, Any], out: Path) -> None:
    """Success (top) and switch jump (bottom) against d per strategy, one column per model; sync/TE dashed."""
    models = payload["models"]
    fig = Figure(figsize=(3.6 * len(models), 5.4))
    axes = fig.subplots(2, len(models), squeeze=False)
    colors = {"async_naive": "tab:red", "async_blend": "tab:green", "rtc": "tab:blue"}
    for col, model in enumerate(models):
        cells = [c for c in model["cells"] if "skipped" not in c]
        for row, metric in enumerate(("success_rate", "switch_jump")):
            ax = axes[row, col]
            for strategy, color in colors.items():
                points = sorted(
                    (c["inference_delay"], c[metric])
                    for c in cells
                    if c["execution"] == strategy and c["delay"] != "auto" and c[metric] is not None
                )
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, color=color, label=strategy)
                for c in cells:
                    if c["execution"] == strategy and c["delay"] == "auto" and c[metric] is not None:
                        ax.plot(c["inference_delay"], c[metric], marker="*", markersize=9, color=color)
            for name, style in (("sync", "--"), ("temporal_ensemble", ":")):
                for c in cells:
                    if c["execution"] == name and c[metric] is not None:
                        ax.axhline(c[metric], color="black", linestyle=style, linewidth=0.8, label=name)
            ylabel = "success rate" if row == 0 else "mean switch jump"
            ax.set(xlabel="inference delay d (steps); * = auto", ylabel=ylabel)
            if row == 0:
                ax.set(title=model["label"], ylim=(-0.03, 1.03))
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)


def run_benchmark(args: argparse.Namespace, argv: Sequence[str], progress: bool = True) -> dict[str, Any]:
    """Evaluate every model's cells; writes the JSON, Markdown and plot after every model; returns the payload."""
    start = time.perf_counter()
    payload: dict[str, Any] = {
        "command": "python benchmarks/bench_realtime.py " + " ".join(argv),
        "machine": f"{platform.machine()} {platform.processor()}".strip()
        + f", torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)",
        "models": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for label, path in args.model:
        payload["models"].append(evaluate_model(label, path, args, progress))
        payload["wall"] = f"{(time.perf_counter() - start) / 60:.1f} min"
        write_json(args.out / f"{args.name}.json", payload)
        write_text_atomic(args.out / f"{args.name}.md", markdown_report(payload))
        plot(payload, args.out / f"{args.name}.png")
    return payload


def _model(spec: str) -> tuple[str, Path]:
    """LABEL=PATH -> (label, path)."""
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--model needs LABEL=CHECKPOINT; got {spec!r}")
    return label, Path(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=_model, action="append", required=True, help="LABEL=CHECKPOINT (repeatable)")
    parser.add_argument("--strategies", nargs="+", default=list(ASYNC), choices=ASYNC, help="async strategies")
    parser.add_argument("--delays", nargs="+", type=int, default=list(DELAYS), help="inference delays d (steps)")
    parser.add_argument("--no-auto", action="store_true", help="skip the cells at the measured delay")
    parser.add_argument("--execution-horizon", type=int, default=8, help="s: steps between chunk requests")
    parser.add_argument("--beta", type=float, default=5.0, help="RTC guidance weight clip")
    parser.add_argument("--mask", default="exp", choices=MASK_SCHEDULES, help="RTC soft mask over the overlap")
    parser.add_argument("--blend-weight", type=float, default=0.7, help="async_blend: the new chunk's weight")
    parser.add_argument("--te-k", type=float, default=0.01, help="temporal ensembling's k (ACT's 0.01)")
    parser.add_argument("--no-temporal-ensemble", action="store_true", help="skip the temporal ensembling row")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the checkpoint's own)")
    parser.add_argument("--num-steps", type=int, default=None, help="denoising steps (default: the sampler's)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per cell")
    parser.add_argument("--n-envs", type=int, default=2, help="parallel envs per cell")
    parser.add_argument("--eval-seed", type=int, default=100000, help="episode i of every cell is reset with this + i")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="episode length (default: the task's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the policy (as eval.py)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "bench_realtime", help="cell caches")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where <name>.{json,md,png} go")
    parser.add_argument("--name", default="realtime", help="results file name")
    parser.add_argument("--reuse", action="store_true", help="keep cells evaluated with the same settings")
    args = parser.parse_args(argv)
    if len({label for label, _ in args.model}) != len(args.model):
        parser.error("--model labels must differ")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its tables."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        payload = run_benchmark(args, argv)
    except BenchmarkError as exc:
        sys.exit(f"bench_realtime.py: error: {exc}")
    print((args.out / f"{args.name}.md").read_text())
    print(f"wall time {payload['wall']}; results in {args.out}/{args.name}.{{json,md,png}}")


if __name__ == "__main__":
    main()
