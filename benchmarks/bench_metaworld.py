"""MetaWorld with 10 demonstrations under DP3's protocol for its image Diffusion Policy baseline: DDPM and flow.

For each MetaWorld v3 task: collect ``--demos`` demonstrations with MetaWorld's scripted expert (env seeds
0..demos-1), then for every objective and training seed train an ``image`` + ``agent_pos`` policy with
train.py's loop. Every ``--eval-every`` optimizer steps (and at the last step) the EMA policy is rolled out
on the same ``--episodes`` layouts (env seeds ``--eval-seed + i``, at most ``--max-episode-steps`` steps,
success if MetaWorld reports it at any step), as DP3 evaluates during training. A model's score is the mean
of its best ``--top-k`` evaluations (DP3's protocol) and, beside it, the final checkpoint's success; over
seeds both are reported as mean ± sd, next to DP3's per-task number (benchmarks/dp3_reference.py). The
learning curves (success against training wall-clock, evaluation time excluded) go to a PNG.

Usage (from the repo root):
    python benchmarks/bench_metaworld.py --tasks reach-v3 drawer-open-v3 --objectives flow --seeds 0 1 2 --reuse
Models train with the MetaWorld recipe (configs/recipe/metaworld_unet_cpu.yaml): its optimizer steps and evaluation
interval unless --train-steps / --eval-every say otherwise. Writes metaworld.json, metaworld.md and
metaworld_curves.png (metaworld_<tag>.* with --tag) to --out (default benchmarks/results), rewritten after each
model. Run dirs are fixed (``<work-dir>/<task>/<objective>_seed<k>``, demos in
``<work-dir>/<task>/demos_<px>px.zarr``); with --reuse a finished model is not retrained and an interrupted one resumes
from its last checkpoint, so a long table can be built across sessions. Several processes may train disjoint
--tasks into one --work-dir; ``--report-only`` then writes the table of every finished model there and lists the
planned ones still pending, training nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data.atomic import write_text_atomic
from data.collect import collect
from data.replay_buffer import ReplayBuffer
from data.task_store import shape_meta_of
from dp3_reference import DP3_DIFFUSION_POLICY, group_means
from envs.metaworld_tasks import METAWORLD_MAX_EPISODE_STEPS, METAWORLD_TASK_NAMES
from policy.optim import autocast_enabled, resolve_device
from results_io import RESULTS_DIR, cpu_caption, machine_info, tag_error, tagged_stem, write_json
from training_runs import (
    MODEL_KEYS,
    BenchmarkError,
    compose_train_config,
    existing_checkpoint,
    plot_learning_curves,
    train_or_reuse,
)

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_TASKS = ("reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3", "pick-place-v3")
OBJECTIVES = ("ddpm", "flow")
SAME_MODEL_KEYS = MODEL_KEYS
SAME_EVAL_KEYS = ("rollout",)  # a run dir whose evaluations used other layouts or counts is another experiment
DP3_EPISODE_STEPS = 200  # DP3's MetaWorldEnv ends an episode after 200 steps


def train_overrides(task: str, objective: str, seed: int, args: argparse.Namespace, store: Path) -> list[str]:
    """train.py overrides on the MetaWorld recipe (configs/experiment/metaworld.yaml); models of a task differ only
    in ``objective`` and ``seed``."""
    return [
        "+experiment=metaworld",
        "task=metaworld",
        f"task.name={task}",
        f"task.n_demos={args.demos}",
        f"task.dataset_path={store}",
        f"task.env_kwargs.image_size={args.image_size}",
        f"task.max_episode_steps={args.max_episode_steps}",
        f"policy.encoder.crop_shape=[{args.crop_size},{args.crop_size}]",
        "obs=image",
        f"objective={objective}",
        f"seed={seed}",
        *([] if args.train_steps is None else [f"training.max_steps={args.train_steps}"]),
        f"training.batch_size={args.batch_size}",
        f"amp={args.amp}",
        "dataset.val_ratio=0",  # every demo trains
        "dataset.collect_workers=1",
        *([] if args.eval_every is None else [f"rollout.every={args.eval_every}"]),
        f"rollout.n_episodes={args.episodes}",
        f"rollout.n_envs={args.n_envs}",
        f"rollout.seed={args.eval_seed}",
        "rollout.n_videos=0",
        f"name=bench_metaworld_{task}_{objective}_seed{seed}",
        *args.overrides,
    ]


def collect_demos(cfg: DictConfig, store: Path, progress: bool = True) -> dict[str, Any]:
    """Fill ``store`` up to the task's n_demos expert episodes (env seeds 0.., MetaWorld's 500-step horizon).

    Returns episodes, steps, the expert's success rate in this call and the wall time.
    """
    start = time.perf_counter()
    task_cfg = {**OmegaConf.to_container(cfg.task, resolve=True), "max_episode_steps": METAWORLD_MAX_EPISODE_STEPS}
    summary = collect(
        task_cfg,
        cfg.task.n_demos,
        store,
        seed=cfg.dataset.collect_seed,
        n_workers=cfg.dataset.collect_workers,
        progress=progress,
    )
    buffer = ReplayBuffer.open(store)
    if buffer.n_episodes != cfg.task.n_demos:
        raise BenchmarkError(
            f"{store} holds {buffer.n_episodes} episodes, not --demos {cfg.task.n_demos} (expert "
            f"success {summary['expert_success_rate']}); delete it or pass another --work-dir"
        )
    return {
        "episodes": buffer.n_episodes,
        "steps": buffer.n_steps,
        "new_episodes": summary["new_episodes"],
        "expert_success_rate": summary["expert_success_rate"] if summary["new_episodes"] else None,  # NaN if none
        "wall_time_s": time.perf_counter() - start,
    }


def train_model(cfg: DictConfig, run_dir: Path, reuse: bool, progress: bool = True) -> dict[str, Any]:
    """Train cfg's model in run_dir with its periodic evaluations (resuming with reuse); returns what it logged."""
    return train_or_reuse(cfg, run_dir, reuse, (*SAME_MODEL_KEYS, *SAME_EVAL_KEYS), progress)


def top_k_mean(values: Sequence[float], k: int) -> float:
    """Mean of the k largest values (all of them if there are fewer): DP3's score over its evaluations."""
    return statistics.fmean(sorted(values, reverse=True)[:k])


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def model_row(task: str, objective: str, seed: int, trained: Mapping[str, Any], top_k: int) -> dict[str, Any]:
    """One trained model: its best-k and final success and its training cost."""
    successes = [e["success_rate"] for e in trained["evaluations"]]
    return {
        "task": task,
        "objective": objective,
        "seed": seed,
        "top_k_success": top_k_mean(successes, top_k),
        "final_success": successes[-1],
        "best_success": max(successes),
        "n_evaluations": len(successes),
        **{k: trained[k] for k in ("steps", "train_time_s", "steps_per_s", "evaluations", "checkpoint", "sampler")},
    }


def summary_rows(models: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, objective): best-k and final success as mean ± sd over seeds, beside DP3's number."""
    out = []
    for task, objective in dict.fromkeys((m["task"], m["objective"]) for m in models):
        mine = [m for m in models if (m["task"], m["objective"]) == (task, objective)]
        group, dp3, dp3_sd = DP3_DIFFUSION_POLICY[task]
        top, top_sd = mean_sd([m["top_k_success"] for m in mine])
        final, final_sd = mean_sd([m["final_success"] for m in mine])
        out.append(
            {
                "task": task,
                "group": group,
                "objective": objective,
                "seeds": [m["seed"] for m in mine],
                "top_k_success": top,
                "top_k_success_sd": top_sd,
                "final_success": final,
                "final_success_sd": final_sd,
                "dp3_diffusion_policy": dp3,
                "dp3_diffusion_policy_sd": dp3_sd,
                "gap_to_dp3": top - dp3,
                "train_minutes_per_model": statistics.fmean(m["train_time_s"] for m in mine) / 60,
                "steps_per_s": statistics.fmean(m["steps_per_s"] for m in mine),
            }
        )
    return out


def averages(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per objective: mean best-k and final success over its tasks, and DP3's mean over the same tasks."""
    out = []
    for objective in dict.fromkeys(r["objective"] for r in rows):
        mine = [r for r in rows if r["objective"] == objective]
        out.append(
            {
                "objective": objective,
                "n_tasks": len(mine),
                "top_k_success": statistics.fmean(r["top_k_success"] for r in mine),
                "final_success": statistics.fmean(r["final_success"] for r in mine),
                "dp3_diffusion_policy": statistics.fmean(r["dp3_diffusion_policy"] for r in mine),
                "tasks_at_or_above_dp3": sum(r["gap_to_dp3"] >= 0 for r in mine),
            }
        )
    return out


def _pm(mean: float, sd: float, n: int) -> str:
    """'0.85' for one seed, '0.85 ± 0.03' for several."""
    return f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {sd:.2f}"


def pending_summary(pending: Sequence[str]) -> str:
    """'seeds 1, 2 of a flow, b flow; seed 0 of c ddpm' from entries '<task> <objective> seed <n>' (short for many)."""
    seeds: dict[str, list[str]] = {}
    for entry in pending:
        model, seed = entry.rsplit(" seed ", 1)
        seeds.setdefault(model, []).append(seed)
    groups: dict[tuple[str, ...], list[str]] = {}
    for model, mine in seeds.items():
        groups.setdefault(tuple(mine), []).append(model)
    parts = [f"seed{'s' * (len(mine) > 1)} {', '.join(mine)} of {', '.join(models)}" for mine, models in groups.items()]
    return "; ".join(parts)


def markdown_report(payload: Mapping[str, Any]) -> str:
    """The Markdown tables: per (task, objective) against DP3, per-objective means, the protocol and command."""
    p = payload["protocol"]
    k = p["top_k"]
    planned = len(p["tasks"]) * len(p["objectives"]) * len(p["seeds"])
    planned = max(planned, len(payload["models"]) + len(payload["pending"]))  # --report-only found more seeds
    obs = p.get("obs_shapes", {"image": [0, 0, 3], "agent_pos": [4]})  # tables written before obs_shapes: image
    seen = " + ".join(
        f"`{key}` ({p['image_size']} px, crop {p['crop_size']})" if len(shape) == 3 else f"`{key}` ({shape[0]}-d)"
        for key, shape in obs.items()
    )
    lines = [
        f"MetaWorld v3, {p['demos']} expert demos per task, {seen}; UNet {p['down_dims']}, horizon {p['horizon']}, "
        f"{p['n_obs_steps']} observation steps, "
        f"{p['n_action_steps']} actions per chunk; {p['train_steps']} training steps x batch {p['batch_size']} "
        f"(bf16 autocast {p['amp']}); evaluation every {p['eval_every']} steps on the same {p['episodes']} layouts "
        f"(seeds {p['eval_seed']}..{p['eval_seed'] + p['episodes'] - 1}), at most {p['max_episode_steps']} steps "
        f"each; CPU ({cpu_caption(payload.get('machine', {}))}), {p['torch_threads']} torch thread(s), "
        f"{p['n_envs']} env worker(s).",
        ""
        if len(payload["models"]) == planned
        else f"\n**Partial: {len(payload['models'])} of {planned} models finished; pending: "
        f"{pending_summary(payload.get('pending') or []) or 'the rest'}.**\n",
        f"| task | DP3 group | objective | seeds | success, best {k} of evaluations | final checkpoint | "
        "DP3 image DP | gap | train min per model | steps/s |",
        "|---|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        n = len(r["seeds"])
        top, final = (
            _pm(r["top_k_success"], r["top_k_success_sd"], n),
            _pm(r["final_success"], r["final_success_sd"], n),
        )
        lines.append(
            f"| {r['task']} | {r['group']} | {r['objective']} | {n} | {top} | {final} | "
            f"{r['dp3_diffusion_policy']:.2f} ± {r['dp3_diffusion_policy_sd']:.2f} | {r['gap_to_dp3']:+.2f} | "
            f"{r['train_minutes_per_model']:.1f} | {r['steps_per_s']:.1f} |"
        )
    lines += [
        "",
        f"| objective | tasks | mean success, best {k} | mean final success | DP3 mean, same tasks | tasks >= DP3 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for a in payload["averages"]:
        lines.append(
            f"| {a['objective']} | {a['n_tasks']} | {a['top_k_success']:.2f} | {a['final_success']:.2f} | "
            f"{a['dp3_diffusion_policy']:.2f} | {a['tasks_at_or_above_dp3']} of {a['n_tasks']} |"
        )
    demos = "; ".join(
        f"{task} {c['episodes']} episodes / {c['steps']} steps" for task, c in payload["collection"].items()
    )
    groups = ", ".join(f"{g} {m:.1%}" for g, m in group_means().items())
    lines += [
        "",
        f"Demonstrations (MetaWorld's scripted expert, env seeds 0.., all used for training): {demos}.",
        "",
        f"Reference: DP3 (Ze et al. 2024, arXiv:2403.03954, Table XVIII), its image Diffusion Policy baseline with "
        "10 demos: mean of the best 5 of its evaluations during 3000 training epochs on a GPU (20 episodes of "
        f"200 steps every 200 epochs), mean ± sd over 3 seeds; group means {groups}. Training minutes exclude "
        f"the evaluations; the learning curves are in {payload['stem']}_curves.png.",
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    return "\n".join(lines)


def write_report(
    args: argparse.Namespace,
    cfg: DictConfig,
    models: list[dict[str, Any]],
    collected: dict[str, Any],
    wall: float,
    pending: Sequence[str] = (),
) -> dict[str, Any]:
    """Write <stem>.{json,md} and <stem>_curves.png to args.out for the models so far; returns the JSON.

    ``pending`` names the planned models known not to be finished (--report-only); the others not yet in
    ``models`` are still to come in this run.
    """
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    rows = summary_rows(models)
    payload = {
        "command": " ".join(["python", "benchmarks/bench_metaworld.py", *args.argv]),
        "stem": output_stem(args),
        "protocol": {
            "tasks": args.tasks,
            "objectives": args.objectives,
            "seeds": args.seeds,
            "demos": args.demos,
            "image_size": args.image_size,
            "crop_size": args.crop_size,
            "obs_shapes": {k: list(v["shape"]) for k, v in shape_meta_of(cfg)["obs"].items()},  # what the models see
            "down_dims": policy_cfg["denoiser"]["down_dims"],
            "horizon": policy_cfg["horizon"],
            "n_obs_steps": policy_cfg["n_obs_steps"],
            "n_action_steps": policy_cfg["n_action_steps"],
            "train_steps": cfg.training.max_steps,
            "batch_size": args.batch_size,
            "eval_every": cfg.rollout.every,
            "top_k": args.top_k,
            "amp": autocast_enabled(cfg.amp, resolve_device(cfg.device)),  # resolved: bf16 autocast on or off
            "max_episode_steps": args.max_episode_steps,
            "episodes": args.episodes,
            "n_envs": args.n_envs,
            "eval_seed": args.eval_seed,
            "torch_threads": torch.get_num_threads(),
            "overrides": args.overrides,
        },
        "machine": machine_info(),
        "dp3_group_means": group_means(),
        "collection": collected,
        "wall_time_s": wall,
        "rows": rows,
        "averages": averages(rows),
        "models": models,
        "pending": list(pending),
    }
    out, stem = Path(args.out), payload["stem"]
    write_json(out / f"{stem}.json", payload)
    write_text_atomic(out / f"{stem}.md", markdown_report(payload))
    panels: dict[str, list] = {}
    for m in models:
        panels.setdefault(m["task"], []).append((f"{m['objective']} seed {m['seed']}", m["evaluations"]))
    references = {task: DP3_DIFFUSION_POLICY[task][1] for task in panels}
    plot_learning_curves(panels, out / f"{stem}_curves.png", references)
    return payload


def output_stem(args: argparse.Namespace) -> str:
    """metaworld, or metaworld_<tag>: the result files' name, so a variant's table sits beside the recipe's."""
    return tagged_stem("metaworld", args.tag)


def stored_demos(store: Path) -> dict[str, Any]:
    """Episodes and steps of an existing demo store (what --report-only reports instead of collecting)."""
    buffer = ReplayBuffer.open(store)
    return {"episodes": buffer.n_episodes, "steps": buffer.n_steps, "new_episodes": 0}


def is_finished(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether run_dir holds cfg's model trained to its last step (BenchmarkError if it holds another model)."""
    ckpt = existing_checkpoint(cfg, run_dir, True, (*SAME_MODEL_KEYS, *SAME_EVAL_KEYS))
    return ckpt is not None and ckpt["step"] >= cfg.training.max_steps


def planned_jobs(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(task, objective, seed) of every model: the --seeds, and with --report-only also each seed in --work-dir.

    So one report covers runs that trained more seeds on some tasks (``--seeds 0 1 2 --tasks a b``) than on the rest.
    """
    jobs = []
    for task in args.tasks:
        for objective in args.objectives:
            seeds = set(args.seeds)
            if args.report_only:
                names = (p.name.removeprefix(f"{objective}_seed") for p in (Path(args.work_dir) / task).glob("*_seed*"))
                seeds |= {int(n) for n in names if n.isdigit()}
            jobs += [(task, objective, seed) for seed in sorted(seeds)]
    return jobs


def run_benchmark(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Collect, train and evaluate every (task, objective, seed), rewriting the report after each model.

    With ``args.report_only`` nothing is collected or trained: the report covers the finished models in
    --work-dir and names the others pending, so runs spread over several processes or sessions merge into one table.
    """
    start = time.perf_counter()
    models, collected, pending = [], {}, []
    jobs = planned_jobs(args)
    payload: dict[str, Any] = {}
    for task, objective, seed in tqdm(jobs, desc="bench_metaworld", unit="model", disable=not progress):
        store = Path(args.work_dir) / task / f"demos_{args.image_size}px.zarr"
        run_dir = Path(args.work_dir) / task / f"{objective}_seed{seed}"
        cfg = compose_train_config(train_overrides(task, objective, seed, args, store))
        if args.report_only and not is_finished(cfg, run_dir):
            pending.append(f"{task} {objective} seed {seed}")
            continue
        if task not in collected:
            collected[task] = stored_demos(store) if args.report_only else collect_demos(cfg, store, progress)
        trained = train_model(cfg, run_dir, args.reuse or args.report_only, progress)
        models.append(model_row(task, objective, seed, trained, args.top_k))
        payload = write_report(args, cfg, models, collected, time.perf_counter() - start, pending)
    if not models:
        raise BenchmarkError(f"no finished model in {args.work_dir} for these --tasks/--objectives/--seeds")
    return write_report(args, cfg, models, collected, time.perf_counter() - start, pending) if pending else payload


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (errors for values that cannot run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="MetaWorld v3 task names")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES, help="models per task")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds per (task, objective)")
    parser.add_argument("--demos", type=int, default=10, help="expert demonstrations per task (DP3: 10)")
    parser.add_argument("--train-steps", type=int, default=None, help="optimizer steps per model (default: recipe)")
    parser.add_argument("--batch-size", type=int, default=64, help="training windows per step")
    parser.add_argument(
        "--eval-every", type=int, default=None, help="optimizer steps between evaluations (default: recipe)"
    )
    parser.add_argument("--top-k", type=int, default=5, help="a model's score: mean of its best k evaluations (DP3: 5)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per evaluation (DP3: 20)")
    parser.add_argument("--max-episode-steps", type=int, default=DP3_EPISODE_STEPS, help="evaluation episode length")
    parser.add_argument("--image-size", type=int, default=84, help="side (px) of the observation image")
    parser.add_argument("--crop-size", type=int, default=76, help="random/centre crop side (px), < --image-size")
    parser.add_argument(
        "--amp",
        choices=["auto", "true", "false"],
        default="auto",
        help="bf16 autocast in training (auto: CUDA or a CPU with native bf16)",
    )
    parser.add_argument("--n-envs", type=int, default=2, help="env worker processes per evaluation")
    parser.add_argument("--eval-seed", type=int, default=100000, help="evaluation episode i is reset with this + i")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads while training")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "bench_metaworld", help="demos, run dirs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where metaworld.{json,md,_curves.png} go")
    parser.add_argument(
        "--tag", default="", help="name the results metaworld_<tag>.* instead of metaworld.* (a variant)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep finished models in --work-dir, resume the others")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: tables of the finished models in --work-dir (any seed), the other --seeds named pending",
    )
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every model, e.g. policy.horizon=8")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(METAWORLD_TASK_NAMES))
    if unknown:
        parser.error(f"unknown MetaWorld tasks {unknown}; choose from {list(METAWORLD_TASK_NAMES)}")
    if error := tag_error(args.tag):
        parser.error(error)
    counts = ("demos", "train_steps", "batch_size", "eval_every", "top_k", "episodes", "max_episode_steps", "n_envs")
    if min(v for v in (getattr(args, name) for name in (*counts, "threads")) if v is not None) < 1:
        names = ", ".join(f"--{name.replace('_', '-')}" for name in (*counts, "threads"))
        parser.error(f"{names} must be >= 1")
    if not 0 < args.crop_size < args.image_size:
        parser.error(f"--crop-size {args.crop_size} must be positive and smaller than --image-size {args.image_size}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        payload = run_benchmark(args)
    except BenchmarkError as exc:
        sys.exit(f"bench_metaworld.py: error: {exc}")
    stem = payload["stem"]
    print((args.out / f"{stem}.md").read_text())
    print(f"wall time {payload['wall_time_s'] / 60:.1f} min; results in {args.out}/{stem}.{{json,md}}")


if __name__ == "__main__":
    main()
