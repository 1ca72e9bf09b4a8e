"""Instruction-conditioned policies with classifier-free guidance, measured in rollouts (issue 16).

Two parts (``--parts``), each training its models in fixed run dirs under ``--work-dir`` and evaluating them with
policy.evaluation.evaluate on the same episode seeds (episode i of every cell is reset with ``--eval-seed + i``):

pick_place: PickPlace image (make demo's recipe, configs/experiment/demo.yaml: 64 px top camera + agent_pos, flow),
    demos collected with their instruction ("put the cube in the left bin" / "... right bin", the expert's mode).
    An instruction-conditioned policy (``instruction_conditioning=true``, p_uncond 0.1) and the unconditioned one
    train on the same store for ``--pp-steps``. The conditioned policy is evaluated at every guidance scale of
    ``--scales`` (default 0 1 1.5 2 3) with each instruction on the same ``--pp-episodes`` layouts; the
    unconditioned one once. Instruction following: the episode ends with the cube resting in the instructed bin
    (PickPlace's step info ``outcome``); the unconditioned policy's rate is the mean over both instructions of the
    share of its episodes that end in that bin (about half its success rate).
metaworld: one instruction-conditioned policy on ``--mw-tasks`` (default 5 MetaWorld tasks, 10 demos each, one
    merged store, configs/task/metaworld_multi.yaml) trained for ``--mw-steps`` x the number of tasks, against one
    unconditioned single-task policy per task trained for ``--mw-steps`` on the same demos: the same total training
    budget (MetaWorld recipe, configs/experiment/metaworld.yaml). Each task is evaluated on ``--mw-episodes``
    layouts, the multi-task policy with that task's training instruction at guidance scale ``--mw-guidance``.

NFE is the sampler's count per chunk; under guidance (w not 0 or 1) each call runs on twice the batch, which the
latency column shows. Results: instructions_<part>.json, .md and .png in ``--out`` (default benchmarks/results).
With ``--reuse`` finished checkpoints are kept, interrupted trainings resume and evaluated cells (cached in each run
dir) are not re-run.

Usage (from the repo root):
    python benchmarks/bench_instructions.py --parts pick_place metaworld --n-envs 2 --reuse
"""

from __future__ import annotations

import argparse
import json
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
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from data.atomic import atomic_path, write_text_atomic
from data.collect import collect
from data.multitask import merge_stores, subtask_config
from data.replay_buffer import ReplayBuffer
from envs.experts.pick_place import PickPlaceExpert
from envs.metaworld_tasks import METAWORLD_MAX_EPISODE_STEPS, METAWORLD_TASK_NAMES, metaworld_env_id
from envs.task_env import TaskEnv
from policy.checkpoint import checkpoint_config, load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.evaluation import evaluate, wilson_interval
from policy.optim import resolve_device
from results_io import RESULTS_DIR, write_json
from training_runs import MODEL_KEYS, BenchmarkError, compose_train_config, train_or_reuse

ROOT = Path(__file__).resolve().parents[1]

PARTS = ("pick_place", "metaworld")
GUIDANCE_SCALES = (0.0, 1.0, 1.5, 2.0, 3.0)
BINS = dict(zip(PickPlaceExpert.mode_names, PickPlaceExpert.mode_instructions))  # outcome -> its instruction
MW_TASKS = ("reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3", "pick-place-v3")
SAME_MODEL_KEYS = (*MODEL_KEYS, "instruction_conditioning", "cfg", "text_encoder")
CELLS_FILE = "bench_instructions_cells.json"  # evaluated cells kept in each run dir, for --reuse


def pick_place_config(conditioned: bool, args: argparse.Namespace) -> DictConfig:
    """train.py's config of a PickPlace model; the two differ only in ``instruction_conditioning``."""
    return compose_train_config(
        [
            "+experiment=demo",
            f"task.dataset_path={args.work_dir / 'pick_place_top_instructions.zarr'}",
            f"instruction_conditioning={str(conditioned).lower()}",
            f"seed={args.seed}",
            f"training.max_steps={args.pp_steps}",
            "rollout.every=0",
            f"name=instructions_pick_place_{'conditioned' if conditioned else 'unconditioned'}",
            *args.pp_overrides,
        ]
    )


def metaworld_config(task: str | None, tasks: Sequence[str], args: argparse.Namespace) -> DictConfig:
    """train.py's config of the multi-task model (task None, ``mw_steps`` x tasks steps) or of one single-task one."""
    multi = task is None
    overrides = [
        "+experiment=metaworld",
        f"task={'metaworld_multi' if multi else 'metaworld'}",
        f"task.dataset_path={multi_store(args)}",
        f"seed={args.seed}",
        f"training.max_steps={args.mw_steps * (len(tasks) if multi else 1)}",
        f"instruction_conditioning={str(multi).lower()}",
        "rollout.every=0",
        f"name=instructions_metaworld_{'multi' if multi else task}",
        *args.mw_overrides,
    ]
    if not multi:
        overrides.insert(2, f"task.name={task}")
    cfg = compose_train_config(overrides)
    with open_dict(cfg):
        cfg.task.tasks = {name: metaworld_env_id(name) for name in tasks}
        if not multi:  # the single-task model trains on its task's part of the merged store: the same demos
            cfg.task.dataset_path = subtask_config(OmegaConf.to_container(cfg.task, resolve=True), task)["dataset_path"]
            del cfg.task.tasks
    return cfg


def multi_store(args: argparse.Namespace) -> Path:
    """The merged MetaWorld store (its tasks' stores sit in <stem>_parts/)."""
    return args.work_dir / "metaworld_multi.zarr"


def collect_metaworld(cfg: DictConfig, tasks: Sequence[str], progress: bool = True) -> None:
    """Each task's demos (MetaWorld's 500-step expert horizon) into its part store, then the merged store."""
    multi = OmegaConf.to_container(cfg.task, resolve=True)
    parts = []
    for name in tasks:
        single = {**subtask_config(multi, name), "max_episode_steps": METAWORLD_MAX_EPISODE_STEPS}
        summary = collect(
            single, cfg.task.n_demos, single["dataset_path"], seed=cfg.dataset.collect_seed, progress=progress
        )
        if summary["episodes"] != cfg.task.n_demos:
            raise BenchmarkError(f"{single['dataset_path']} holds {summary['episodes']} demos, not {cfg.task.n_demos}")
        parts.append(single["dataset_path"])
    if not Path(multi["dataset_path"]).exists():
        merge_stores(parts, multi["dataset_path"], multi["name"], progress=progress)
    merged = ReplayBuffer.open(multi["dataset_path"])
    if list(merged.attrs.get("tasks", [])) != list(tasks) or merged.n_episodes != len(tasks) * cfg.task.n_demos:
        raise BenchmarkError(
            f"{multi['dataset_path']} holds other tasks or demos; delete it or pass another --work-dir"
        )


def cell_key(*parts: Any) -> str:
    """Identifies an evaluated cell in a run dir's cell cache."""
    return "|".join(str(p) for p in parts)


class Evaluator:
    """Evaluates cells of one checkpoint on fixed seeds, cached in its run dir (``--reuse`` skips cached cells)."""

    def __init__(self, checkpoint: Path, args: argparse.Namespace, reuse: bool) -> None:
        self.ckpt = load_checkpoint(checkpoint)
        self.task_cfg = checkpoint_config(self.ckpt)["task"]
        self.policy = ChunkPolicy.from_checkpoint(checkpoint, loaded=self.ckpt)
        self.args, self.reuse = args, reuse
        self.cache_path = checkpoint.parent.parent / CELLS_FILE
        self.cache = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}

    def cell(self, task_cfg: Mapping[str, Any], episodes: int, instruction: str | None, scale: float) -> dict[str, Any]:
        """One evaluation (without per-episode videos) of ``task_cfg``'s env with this instruction and scale."""
        steps = self.args.eval_max_steps or task_cfg["max_episode_steps"]
        key = cell_key(task_cfg["env_id"], instruction, scale, episodes, self.args.n_envs, self.args.eval_seed, steps)
        key = cell_key(key, int(self.ckpt["step"]))
        if not (self.reuse and key in self.cache):
            result = evaluate(
                self.policy,
                TaskEnv.from_config({**task_cfg, "max_episode_steps": steps}),
                n_episodes=episodes,
                n_envs=self.args.n_envs,
                seed=self.args.eval_seed,
                instruction=instruction,
                guidance_scale=scale,
                progress=False,
            )
            self.cache[key] = {k: v for k, v in result.items() if k != "videos"}
            write_json(self.cache_path, self.cache)
        return self.cache[key]


def pick_place_cells(scales: Sequence[float]) -> list[tuple[str, float, str | None]]:
    """(model, guidance scale, instructed bin) cells: the conditioned model per scale and bin, the other once."""
    return [("conditioned", float(w), name) for w in scales for name in BINS] + [("unconditioned", 1.0, None)]


def following_row(model: str, scale: float | None, cells: Sequence[tuple[str | None, Mapping[str, Any]]]) -> dict:
    """Instruction following and success of (instructed bin, evaluation) cells of one model and scale.

    An episode follows its instruction when it succeeds with the cube in the instructed bin. A cell without an
    instruction (the unconditioned model) counts as one cell per bin of the same episodes.
    """
    pairs = [(b, c) for b, c in cells if b is not None] or [(b, c) for b in BINS for _, c in cells]
    n = sum(c["n_episodes"] for _, c in pairs)
    followed = sum(e["success"] and e["outcome"] == b for b, c in pairs for e in c["episodes"])
    succeeded = sum(e["success"] for _, c in pairs for e in c["episodes"])
    per_bin = {b: sum(e["success"] and e["outcome"] == b for e in c["episodes"]) / c["n_episodes"] for b, c in pairs}
    first = pairs[0][1]
    return {
        "model": model,
        "guidance_scale": scale,
        "n_episodes": n,
        "following_rate": followed / n,
        "following_ci95": list(wilson_interval(followed, n)),
        "following_given_success": followed / succeeded if succeeded else None,
        "success_rate": succeeded / n,
        "success_ci95": list(wilson_interval(succeeded, n)),
        "following_per_bin": per_bin,
        "nfe": first["nfe"],
        "denoiser_batch": first.get("denoiser_batch", 1),
        "latency_ms_median": statistics.median(c["latency_ms"]["median"] for _, c in pairs),
    }


def pick_place_rows(evaluated: Mapping[tuple[str, float, str | None], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per guidance scale of the conditioned model, then the unconditioned model's row."""
    rows = []
    for scale in dict.fromkeys(w for m, w, _ in evaluated if m == "conditioned"):
        cells = [(b, c) for (m, w, b), c in evaluated.items() if m == "conditioned" and w == scale]
        rows.append(following_row("conditioned", scale, cells))
    plain = [(b, c) for (m, _, b), c in evaluated.items() if m == "unconditioned"]
    return rows + ([following_row("unconditioned", None, plain)] if plain else [])


def pick_place_table(rows: Sequence[Mapping[str, Any]], caption: str) -> str:
    """The guidance sweep's Markdown table."""
    lines = [
        caption,
        "",
        "| model | w | instruction following (95% CI) | following among successes | left / right bin followed | "
        "success (95% CI) | NFE | rows per call | latency ms / chunk |",
        "|---|---:|---|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        fl, fh = r["following_ci95"]
        sl, sh = r["success_ci95"]
        given = "-" if r["following_given_success"] is None else f"{r['following_given_success']:.2f}"
        per_bin = " / ".join(f"{v:.2f}" for v in r["following_per_bin"].values())
        scale = "-" if r["guidance_scale"] is None else f"{r['guidance_scale']:g}"
        lines.append(
            f"| {r['model']} | {scale} | {r['following_rate']:.2f} ({fl:.2f}-{fh:.2f}) | {given} | {per_bin} | "
            f"{r['success_rate']:.2f} ({sl:.2f}-{sh:.2f}) | {r['nfe']} | {r['denoiser_batch']}x | "
            f"{r['latency_ms_median']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_pick_place(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """Following and success rates (95% CI) against the guidance scale; the unconditioned model as dashed lines."""
    fig = Figure(figsize=(6.4, 4.0))  # no pyplot: no GUI backend, no global figure registry
    ax = fig.subplots()
    guided = [r for r in rows if r["model"] == "conditioned"]
    scales = np.array([r["guidance_scale"] for r in guided])
    for metric, color in (("following", "tab:blue"), ("success", "tab:green")):
        values = np.array([r[f"{metric}_rate"] for r in guided])
        ci = np.array([r[f"{metric}_ci95"] for r in guided]).reshape(-1, 2)
        yerr = np.clip([values - ci[:, 0], ci[:, 1] - values], 0, None)
        ax.errorbar(scales, values, yerr=yerr, marker="o", capsize=3, color=color, label=f"{metric}, conditioned")
        for r in rows:
            if r["model"] == "unconditioned":
                ax.axhline(r[f"{metric}_rate"], color=color, linestyle="--", label=f"{metric}, unconditioned")
    ax.set(
        xlabel="guidance scale w", ylabel="rate (95% CI)", ylim=(-0.03, 1.03), title="PickPlace: instruction following"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)


def run_pick_place(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Train both PickPlace models, evaluate the guidance sweep, write instructions_pick_place.{json,md,png}."""
    start = time.perf_counter()
    trained, evaluators = {}, {}
    for model in ("conditioned", "unconditioned"):
        cfg = pick_place_config(model == "conditioned", args)
        run_dir = args.work_dir / "pick_place" / f"{model}_seed{args.seed}_{args.pp_steps}steps"
        trained[model] = train_or_reuse(cfg, run_dir, args.reuse, SAME_MODEL_KEYS, progress)
        evaluators[model] = Evaluator(Path(trained[model]["checkpoint"]), args, args.reuse)
    evaluated = {}
    for model, scale, bin_name in tqdm(pick_place_cells(args.scales), desc="pick_place cells", disable=not progress):
        evaluator = evaluators[model]
        instruction = None if bin_name is None else BINS[bin_name]
        evaluated[model, scale, bin_name] = evaluator.cell(evaluator.task_cfg, args.pp_episodes, instruction, scale)
    rows = pick_place_rows(evaluated)
    caption = (
        f"**PickPlace, instruction following under classifier-free guidance.** make demo's image recipe "
        f"(64 px top camera + agent_pos, flow, Euler-10), {args.pp_steps} training steps per model (seed {args.seed}); "
        f"the conditioned model (p_uncond {cfg.cfg.p_uncond}, vocabulary text encoder) is asked each instruction on "
        f"the same {args.pp_episodes} layouts (seeds {args.eval_seed}..{args.eval_seed + args.pp_episodes - 1}); "
        "following = success with the cube in the instructed bin; rows per call 2x = the conditional and "
        f"unconditional passes batched into one denoiser call; {args.n_envs} env(s), {resolve_device(cfg.device)}."
    )
    payload = {
        "part": "pick_place",
        "command": " ".join(["python", "benchmarks/bench_instructions.py", *args.argv]),
        "rows": rows,
        "trained": {
            m: {k: t[k] for k in ("checkpoint", "steps", "train_time_s", "steps_per_s")} for m, t in trained.items()
        },
        "cells": [{"model": m, "guidance_scale": w, "bin": b, **c} for (m, w, b), c in evaluated.items()],
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_time_s": time.perf_counter() - start,
    }
    write_json(args.out / "instructions_pick_place.json", payload)
    write_text_atomic(args.out / "instructions_pick_place.md", pick_place_table(rows, caption))
    plot_pick_place(rows, args.out / "instructions_pick_place.png")
    return payload


def metaworld_rows(single: Mapping[str, Mapping[str, Any]], multi: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Per task: the single-task and the multi-task policy's success, then their means over the tasks."""
    rows = []
    for task in single:
        s, m = single[task], multi[task]
        rows.append(
            {
                "task": task,
                "instruction": m["instruction"],
                "single_success": s["success_rate"],
                "single_ci95": s["success_ci95"],
                "multi_success": m["success_rate"],
                "multi_ci95": m["success_ci95"],
                "gap": m["success_rate"] - s["success_rate"],
                "n_episodes": s["n_episodes"],
            }
        )
    if rows:
        means = {k: statistics.fmean(r[k] for r in rows) for k in ("single_success", "multi_success", "gap")}
        rows.append({"task": "mean", "instruction": None, **means, "n_episodes": sum(r["n_episodes"] for r in rows)})
    return rows


def metaworld_table(rows: Sequence[Mapping[str, Any]], caption: str) -> str:
    """The multi-task comparison's Markdown table."""
    lines = [
        caption,
        "",
        "| task | instruction | single-task success (95% CI) | multi-task success (95% CI) | gap (points) |",
        "|---|---|---|---|---:|",
    ]
    for r in rows:
        if r["task"] == "mean":
            lines.append(
                f"| **mean** | | {r['single_success']:.2f} | {r['multi_success']:.2f} | {100 * r['gap']:+.0f} |"
            )
            continue
        (sl, sh), (ml, mh) = r["single_ci95"], r["multi_ci95"]
        lines.append(
            f"| {r['task']} | {r['instruction']} | {r['single_success']:.2f} ({sl:.2f}-{sh:.2f}) | "
            f"{r['multi_success']:.2f} ({ml:.2f}-{mh:.2f}) | {100 * r['gap']:+.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_metaworld(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """Grouped bars per task (and the mean): single-task against multi-task success."""
    fig = Figure(figsize=(1.4 * len(rows) + 2, 3.8))
    ax = fig.subplots()
    x = np.arange(len(rows))
    for offset, key, label in ((-0.2, "single_success", "single-task"), (0.2, "multi_success", "multi-task")):
        ax.bar(x + offset, [r[key] for r in rows], width=0.4, label=label)
    ax.set_xticks(x, [r["task"] for r in rows], rotation=20, fontsize=8)
    ax.set(ylabel="success rate", ylim=(0, 1.05), title="MetaWorld: one multi-task policy vs single-task policies")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)


def run_metaworld(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Collect, train the single-task and multi-task models, evaluate every task, write instructions_metaworld.*."""
    start = time.perf_counter()
    tasks = list(args.mw_tasks)
    multi_cfg = metaworld_config(None, tasks, args)
    collect_metaworld(multi_cfg, tasks, progress)
    work = args.work_dir / "metaworld"
    trained = {
        "multi": train_or_reuse(multi_cfg, work / f"multi_seed{args.seed}", args.reuse, SAME_MODEL_KEYS, progress)
    }
    for task in tasks:
        cfg = metaworld_config(task, tasks, args)
        trained[task] = train_or_reuse(cfg, work / f"{task}_seed{args.seed}", args.reuse, SAME_MODEL_KEYS, progress)
    multi = Evaluator(Path(trained["multi"]["checkpoint"]), args, args.reuse)
    instructions = multi.policy.instruction_config["tasks"]
    single_results, multi_results = {}, {}
    for task in tqdm(tasks, desc="metaworld tasks", disable=not progress):
        evaluator = Evaluator(Path(trained[task]["checkpoint"]), args, args.reuse)
        single_results[task] = evaluator.cell(evaluator.task_cfg, args.mw_episodes, None, 1.0)
        task_cfg = subtask_config(multi.task_cfg, task)
        cell = multi.cell(task_cfg, args.mw_episodes, instructions[task], args.mw_guidance)
        multi_results[task] = {**cell, "instruction": instructions[task]}
    rows = metaworld_rows(single_results, multi_results)
    caption = (
        f"**MetaWorld, one instruction-conditioned policy on {len(tasks)} tasks against single-task policies.** "
        f"{multi_cfg.task.n_demos} expert demos per task (one merged store; each single-task policy trains on its "
        f"task's demos), the MetaWorld image recipe; the multi-task policy trains {args.mw_steps * len(tasks)} steps, "
        f"each single-task one {args.mw_steps} (the same total budget), seed {args.seed}; final checkpoints evaluated "
        f"on the same {args.mw_episodes} layouts per task (seeds {args.eval_seed}..), the multi-task one with the "
        f"task's instruction at w = {args.mw_guidance:g}; {args.n_envs} env(s), {resolve_device(multi_cfg.device)}."
    )
    payload = {
        "part": "metaworld",
        "command": " ".join(["python", "benchmarks/bench_instructions.py", *args.argv]),
        "tasks": tasks,
        "rows": rows,
        "trained": {
            m: {k: t[k] for k in ("checkpoint", "steps", "train_time_s", "steps_per_s")} for m, t in trained.items()
        },
        "single_cells": single_results,
        "multi_cells": multi_results,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_time_s": time.perf_counter() - start,
    }
    write_json(args.out / "instructions_metaworld.json", payload)
    write_text_atomic(args.out / "instructions_metaworld.md", metaworld_table(rows, caption))
    plot_metaworld(rows, args.out / "instructions_metaworld.png")
    return payload


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; one-line errors for impossible settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="which studies to run")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every model")
    parser.add_argument("--pp-steps", type=int, default=5000, help="PickPlace: optimizer steps per model")
    parser.add_argument("--pp-episodes", type=int, default=25, help="PickPlace: episodes per (scale, instruction)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(GUIDANCE_SCALES), help="guidance scales w")
    parser.add_argument(
        "--mw-tasks", nargs="+", default=list(MW_TASKS), help="MetaWorld v3 tasks of the multi-task policy"
    )
    parser.add_argument(
        "--mw-steps", type=int, default=3000, help="MetaWorld: steps per single-task model (x tasks: multi)"
    )
    parser.add_argument("--mw-episodes", type=int, default=20, help="MetaWorld: evaluation episodes per task")
    parser.add_argument(
        "--mw-guidance", type=float, default=1.0, help="MetaWorld: the multi-task policy's guidance scale"
    )
    parser.add_argument("--n-envs", type=int, default=2, help="parallel envs per evaluation")
    parser.add_argument("--eval-seed", type=int, default=100000, help="episode i of every cell is reset with this + i")
    parser.add_argument(
        "--eval-max-steps", type=int, default=None, help="episode length in evaluation (default: the task's)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the env workers need the other cores)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where instructions_<part>.{json,md,png} go")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "bench_instructions", help="stores, runs")
    parser.add_argument("--reuse", action="store_true", help="keep finished checkpoints and evaluated cells")
    parser.add_argument(
        "--pp-overrides", nargs="*", default=[], help="extra train.py overrides of the PickPlace models"
    )
    parser.add_argument(
        "--mw-overrides", nargs="*", default=[], help="extra train.py overrides of the MetaWorld models"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    counts = (args.pp_steps, args.pp_episodes, args.mw_steps, args.mw_episodes, args.n_envs, args.threads)
    if min(counts) < 1 or (args.eval_max_steps is not None and args.eval_max_steps < 1):
        parser.error("steps, episodes, --n-envs, --threads and --eval-max-steps must be >= 1")
    if min(args.scales) < 0 or args.mw_guidance < 0:
        parser.error(f"guidance scales must be >= 0; got --scales {args.scales}, --mw-guidance {args.mw_guidance}")
    unknown = sorted(set(args.mw_tasks) - set(METAWORLD_TASK_NAMES))
    if unknown or len(set(args.mw_tasks)) < 2:
        parser.error(f"--mw-tasks needs at least two distinct MetaWorld tasks; unknown: {unknown}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen parts and print their tables."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    runners = {"pick_place": run_pick_place, "metaworld": run_metaworld}
    try:
        for part in args.parts:
            payload = runners[part](args)
            print((args.out / f"instructions_{part}.md").read_text())
            print(f"{part}: {payload['wall_time_s'] / 60:.1f} min; results in {args.out}/instructions_{part}.*")
    except BenchmarkError as exc:
        sys.exit(f"bench_instructions.py: error: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench_instructions.py: stopped; rerun with --reuse to continue (finished models and cells are kept)")


if __name__ == "__main__":
    main()
