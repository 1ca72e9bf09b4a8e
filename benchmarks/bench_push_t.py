"""PushT under Diffusion Policy's scoring: success rate and normalized coverage of the CPU recipes, state and image.

For each observation set (``state``: pusher, T position and yaw; ``image``: 96 px top camera + pusher position)
every objective and training seed trains with the PushT recipe (``configs/experiment/push_t_<obs>.yaml``) on one
store of ``--demos`` expert demonstrations, rolling the EMA policy out every ``--eval-every`` steps on
``--curve-episodes`` episodes for the learning curve. The final checkpoint is then evaluated on ``--episodes``
fresh episodes (env seeds ``--eval-seed + i``; the curve's episodes are the first of them). The score is
Diffusion Policy's: the max over an episode of coverage / 0.95 clipped to 1, averaged over episodes
(``normalized score``), beside the success rate (coverage >= 0.95 at any step) and the issue's goals. The
final checkpoint is also evaluated replanning after ``--ablate-n-action-steps`` actions (an inference choice,
no retraining), on the same episodes.

Usage (from the repo root):
    python benchmarks/bench_push_t.py --obs state image --objectives flow --seeds 0 --reuse
Writes push_t.json, push_t.md and push_t_curves.png (push_t_<tag>.* with --tag) to --out (default
benchmarks/results), rewritten after each model. Run dirs are fixed (``<work-dir>/<obs>/<objective>_seed<k>``,
the store ``<work-dir>/push_t.zarr``); with --reuse a finished model is not retrained, an interrupted one resumes
and a finished evaluation is kept.
"""

from __future__ import annotations

import argparse
import json
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
from envs.task_env import TaskEnv
from policy.chunk_policy import ChunkPolicy
from policy.evaluation import evaluate
from policy.optim import autocast_enabled, resolve_device
from results_io import RESULTS_DIR, cpu_caption, machine_info, tag_error, tagged_stem, write_json
from training_runs import MODEL_KEYS, BenchmarkError, compose_train_config, plot_learning_curves, train_or_reuse

ROOT = Path(__file__).resolve().parents[1]
OBS = ("state", "image")
OBJECTIVES = ("ddpm", "flow")
SAME_MODEL_KEYS = (*MODEL_KEYS, "rollout")  # the learning curve's rollouts belong to the model
# Diffusion Policy (Chi et al. 2023) on its PushT, CNN-based, normalized coverage: the anchor of issue #13.
DIFFUSION_POLICY_SCORE = {"state": 0.91, "image": 0.84}
GOALS = {"state": {"success_rate": 0.80, "normalized_score": 0.90}, "image": {"normalized_score": 0.80}}
GOAL_TRAIN_MINUTES = 15.0


def store_overrides(obs: str, args: argparse.Namespace) -> list[str]:
    """The recipe of ``obs`` on the benchmark's store and the user's overrides."""
    return [
        f"+experiment=push_t_{obs}",
        f"task.n_demos={args.demos}",
        f"task.dataset_path={Path(args.work_dir) / 'push_t.zarr'}",
        *args.overrides,
    ]


def train_overrides(obs: str, objective: str, seed: int, args: argparse.Namespace) -> list[str]:
    """train.py overrides on the PushT recipe of ``obs``; models differ only in obs, objective and seed."""
    steps = [] if args.train_steps is None else [f"training.max_steps={args.train_steps}"]
    horizon = [] if args.max_episode_steps is None else [f"task.max_episode_steps={args.max_episode_steps}"]
    return [
        *store_overrides(obs, args),
        *horizon,
        f"objective={objective}",
        f"seed={seed}",
        *steps,
        f"rollout.every={args.eval_every}",
        f"rollout.n_episodes={args.curve_episodes}",
        f"rollout.n_envs={args.n_envs}",
        f"rollout.seed={args.eval_seed}",
        "rollout.n_videos=0",
        f"name=bench_push_t_{obs}_{objective}_seed{seed}",
    ]


def collect_demos(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Fill the benchmark's store up to ``--demos`` expert episodes at the task's own episode length."""
    cfg = compose_train_config(store_overrides(args.obs[0], args))
    store = Path(cfg.task.dataset_path)
    summary = collect(
        OmegaConf.to_container(cfg.task, resolve=True),
        args.demos,
        store,
        seed=cfg.dataset.collect_seed,
        n_workers=cfg.dataset.collect_workers,
        progress=progress,
    )
    buffer = ReplayBuffer.open(store)
    if buffer.n_episodes != args.demos:
        raise BenchmarkError(
            f"{store} holds {buffer.n_episodes} episodes, not --demos {args.demos} (expert success "
            f"{summary['expert_success_rate']}); delete it or pass another --work-dir"
        )
    return {"episodes": buffer.n_episodes, "steps": buffer.n_steps, "new_episodes": summary["new_episodes"]}


def final_evaluation(
    cfg: DictConfig, trained: Mapping[str, Any], args: argparse.Namespace, progress: bool, n_action_steps: int
) -> dict[str, Any]:
    """The final checkpoint on ``--episodes`` episodes executing ``n_action_steps`` actions per chunk.

    Cached in the run dir (reused for the same step, seeds and n_action_steps).
    """
    checkpoint = Path(trained["checkpoint"])
    cache = checkpoint.parent.parent / f"final_eval_n{n_action_steps}.json"
    wanted = (args.episodes, args.eval_seed, trained["steps"])
    if cache.exists():
        saved = json.loads(cache.read_text())
        if (saved["n_episodes"], saved["seed"], saved["step"]) == wanted:
            return saved
    policy = ChunkPolicy.from_checkpoint(checkpoint)
    most = policy.horizon - policy.n_obs_steps + 1
    if not 1 <= n_action_steps <= most:
        raise BenchmarkError(f"--ablate-n-action-steps {n_action_steps}: this model executes at most {most} per chunk")
    policy.n_action_steps = n_action_steps  # replanning is an inference choice: no retraining
    task = TaskEnv.from_config(OmegaConf.to_container(cfg.task, resolve=True))
    result = evaluate(
        policy, task, n_episodes=args.episodes, n_envs=args.n_envs, seed=args.eval_seed, progress=progress
    )
    result["step"] = trained["steps"]
    write_json(cache, result)
    return result


def _brief(result: Mapping[str, Any]) -> dict[str, float]:
    """Success, normalized score and mean max coverage of one evaluation."""
    return {k: result[k] for k in ("success_rate", "normalized_score", "mean_max_reward")}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def model_row(obs: str, objective: str, seed: int, trained: Mapping[str, Any], final: Mapping[str, Any]) -> dict:
    """One trained model: its final evaluation, its best periodic score and its training cost."""
    return {
        "obs": obs,
        "objective": objective,
        "seed": seed,
        "success_rate": final["success_rate"],
        "success_ci95": final["success_ci95"],
        "normalized_score": final["normalized_score"],
        "mean_max_coverage": final["mean_max_reward"],
        "n_episodes": final["n_episodes"],
        "best_curve_score": max(e["normalized_score"] for e in trained["evaluations"]),
        **{k: trained[k] for k in ("steps", "train_time_s", "steps_per_s", "evaluations", "checkpoint", "sampler")},
    }


def summary_rows(models: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (obs, objective): final success and normalized score as mean ± sd over seeds, against the goals."""
    out = []
    for obs, objective in dict.fromkeys((m["obs"], m["objective"]) for m in models):
        mine = [m for m in models if (m["obs"], m["objective"]) == (obs, objective)]
        success, success_sd = mean_sd([m["success_rate"] for m in mine])
        score, score_sd = mean_sd([m["normalized_score"] for m in mine])
        minutes = statistics.fmean(m["train_time_s"] for m in mine) / 60
        measured = {"success_rate": success, "normalized_score": score}
        out.append(
            {
                "obs": obs,
                "objective": objective,
                "seeds": [m["seed"] for m in mine],
                "success_rate": success,
                "success_sd": success_sd,
                "normalized_score": score,
                "normalized_score_sd": score_sd,
                "best_curve_score": statistics.fmean(m["best_curve_score"] for m in mine),
                "train_minutes_per_model": minutes,
                "steps_per_s": statistics.fmean(m["steps_per_s"] for m in mine),
                "diffusion_policy_score": DIFFUSION_POLICY_SCORE[obs],
                "goal_gaps": {k: measured[k] - v for k, v in GOALS[obs].items()},  # >= 0: goal met
                "within_goal_minutes": minutes <= GOAL_TRAIN_MINUTES,
            }
        )
    return out


def _pm(mean: float, sd: float, n: int, digits: int = 2) -> str:
    """'0.85' for one seed, '0.85 ± 0.03' for several."""
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_report(payload: Mapping[str, Any]) -> str:
    """The Markdown table per (obs, objective) against Diffusion Policy and the goals, with protocol and command."""
    p = payload["protocol"]
    planned = len(p["obs"]) * len(p["objectives"]) * len(p["seeds"])
    lines = [
        f"PushT, {p['demos']} expert demos; recipes configs/experiment/push_t_<obs>.yaml (the state one is "
        "configs/recipe/push_t_unet_cpu.yaml, which task=push_t loads); final checkpoint on "
        f"{p['episodes']} episodes (seeds {p['eval_seed']}..{p['eval_seed'] + p['episodes'] - 1}), learning curve "
        f"every {p['eval_every']} steps on the first {p['curve_episodes']}; CPU "
        f"({cpu_caption(payload.get('machine', {}))}), {p['torch_threads']} torch "
        f"thread(s), {p['n_envs']} env worker(s).",
        ""
        if len(payload["models"]) == planned
        else f"\n**Partial: {len(payload['models'])} of {planned} models finished; the rest are pending.**\n",
        "| obs | objective | seeds | success (final) | normalized score (final) | best score on the curve | "
        "Diffusion Policy score | goal gaps | train min per model | steps/s | model |",
        "|---|---|---:|---|---|---:|---:|---|---:|---:|---|",
    ]
    for r in payload["rows"]:
        n = len(r["seeds"])
        gaps = ", ".join(f"{k.replace('_rate', '').replace('_', ' ')} {v:+.2f}" for k, v in r["goal_gaps"].items())
        minutes = f"{r['train_minutes_per_model']:.1f}" + ("" if r["within_goal_minutes"] else " (> 15)")
        model = payload["recipes"][r["obs"]]
        lines.append(
            f"| {r['obs']} | {r['objective']} | {n} | {_pm(r['success_rate'], r['success_sd'], n)} | "
            f"{_pm(r['normalized_score'], r['normalized_score_sd'], n, 3)} | {r['best_curve_score']:.3f} | "
            f"{r['diffusion_policy_score']:.2f} | {gaps} | {minutes} | {r['steps_per_s']:.1f} | {model} |"
        )
    ablated = [m for m in payload["models"] if len(m["n_action_steps_ablation"]) > 1]
    if ablated:
        lines += [
            "",
            "The final checkpoints replanning after other numbers of executed actions (same episodes, no retraining):",
            "",
            "| obs | objective | seed | actions per chunk | success | normalized score | mean max coverage |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for m in ablated:
            for n, r in sorted(m["n_action_steps_ablation"].items(), key=lambda item: -int(item[0])):
                lines.append(
                    f"| {m['obs']} | {m['objective']} | {m['seed']} | {n} | {r['success_rate']:.2f} | "
                    f"{r['normalized_score']:.3f} | {r['mean_max_reward']:.3f} |"
                )
    lines += [
        "",
        "Normalized score: Diffusion Policy's PushT metric, max coverage / 0.95 clipped to 1, mean over episodes. "
        "Goals (issue #13): state success >= 0.80 and score >= 0.90, image score >= 0.80, each in <= 15 training "
        "minutes (evaluations excluded). Reference: Diffusion Policy (Chi et al. 2023), CNN, on its own PushT. "
        f"The learning curves are in {payload['stem']}_curves.png.",
        "",
        f"Demonstrations (our PushT expert, both strategies, env seeds 0..): {payload['collection']['episodes']} "
        f"episodes / {payload['collection']['steps']} steps; 5% of episodes held out for the validation loss.",
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    return "\n".join(lines)


def recipe_summary(cfg: DictConfig) -> str:
    """One cell describing a model: UNet widths, horizon, batch, steps, lr, precision."""
    amp = autocast_enabled(cfg.amp, resolve_device(cfg.device), images=cfg.obs == "image")
    return (
        f"UNet {list(cfg.policy.denoiser.down_dims)}, H {cfg.policy.horizon}/{cfg.policy.n_action_steps}, "
        f"{cfg.training.max_steps} x b{cfg.training.batch_size}, lr {cfg.training.lr:g}, {'bf16' if amp else 'fp32'}"
    )


def output_stem(args: argparse.Namespace) -> str:
    """push_t, or push_t_<tag>: the result files' name, so a variant's table sits beside the recipe's."""
    return tagged_stem("push_t", args.tag)


def write_report(
    args: argparse.Namespace, models: list[dict], recipes: dict[str, str], collected: dict[str, Any], wall: float
) -> dict:
    """Write <stem>.{json,md} and <stem>_curves.png to args.out for the models so far; returns the JSON."""
    rows = summary_rows(models)
    payload = {
        "stem": output_stem(args),
        "command": " ".join(["python", "benchmarks/bench_push_t.py", *args.argv]),
        "protocol": {
            "obs": args.obs,
            "objectives": args.objectives,
            "seeds": args.seeds,
            "demos": args.demos,
            "episodes": args.episodes,
            "curve_episodes": args.curve_episodes,
            "eval_every": args.eval_every,
            "eval_seed": args.eval_seed,
            "n_envs": args.n_envs,
            "torch_threads": torch.get_num_threads(),
            "overrides": args.overrides,
        },
        "machine": machine_info(),
        "recipes": recipes,
        "collection": collected,
        "wall_time_s": wall,
        "rows": rows,
        "models": models,
    }
    out = Path(args.out)
    write_json(out / f"{payload['stem']}.json", payload)
    write_text_atomic(out / f"{payload['stem']}.md", markdown_report(payload))
    panels: dict[str, list] = {}
    for m in models:
        panels.setdefault(m["obs"], []).append((f"{m['objective']} seed {m['seed']}", m["evaluations"]))
    references = {obs: DIFFUSION_POLICY_SCORE[obs] for obs in panels}
    plot_learning_curves(panels, out / f"{payload['stem']}_curves.png", references, metric="normalized_score")
    return payload


def run_benchmark(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate every (obs, objective, seed), rewriting the report after each model."""
    start = time.perf_counter()
    models: list[dict] = []
    recipes: dict[str, str] = {}
    payload: dict[str, Any] = {}
    collected = collect_demos(args, progress)
    jobs = [(obs, objective, seed) for obs in args.obs for objective in args.objectives for seed in args.seeds]
    for obs, objective, seed in tqdm(jobs, desc="bench_push_t", unit="model", disable=not progress):
        cfg = compose_train_config(train_overrides(obs, objective, seed, args))
        recipes[obs] = recipe_summary(cfg)
        run_dir = Path(args.work_dir) / obs / f"{objective}_seed{seed}"
        trained = train_or_reuse(cfg, run_dir, args.reuse, SAME_MODEL_KEYS, progress)
        own = int(cfg.policy.n_action_steps)
        final = final_evaluation(cfg, trained, args, progress, own)
        models.append(model_row(obs, objective, seed, trained, final))
        models[-1]["n_action_steps_ablation"] = {
            n: _brief(final_evaluation(cfg, trained, args, progress, n)) for n in args.ablate_n_action_steps if n != own
        } | {own: _brief(final)}
        payload = write_report(args, models, recipes, collected, time.perf_counter() - start)
    return payload


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (errors for values that cannot run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs", nargs="+", default=list(OBS), choices=OBS, help="observation sets")
    parser.add_argument("--objectives", nargs="+", default=["flow"], choices=OBJECTIVES, help="models per obs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds per (obs, objective)")
    parser.add_argument("--demos", type=int, default=200, help="expert demonstrations (Diffusion Policy: about 200)")
    parser.add_argument("--train-steps", type=int, default=None, help="optimizer steps per model (default: recipe)")
    parser.add_argument("--eval-every", type=int, default=1000, help="optimizer steps between curve evaluations")
    parser.add_argument("--curve-episodes", type=int, default=20, help="episodes per curve evaluation")
    parser.add_argument("--episodes", type=int, default=50, help="episodes of the final evaluation")
    parser.add_argument(
        "--max-episode-steps", type=int, default=None, help="evaluation episode length (default: the task's, 300)"
    )
    parser.add_argument(
        "--ablate-n-action-steps",
        nargs="*",
        type=int,
        default=[8, 4, 2],
        help="also evaluate each final checkpoint executing these numbers of actions per chunk",
    )
    parser.add_argument("--n-envs", type=int, default=2, help="env worker processes per evaluation")
    parser.add_argument("--eval-seed", type=int, default=100000, help="evaluation episode i is reset with this + i")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads while training")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "bench_push_t", help="store, run dirs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where push_t.{json,md,_curves.png} go")
    parser.add_argument("--reuse", action="store_true", help="keep finished models in --work-dir, resume the others")
    parser.add_argument("--tag", default="", help="name the results push_t_<tag>.* instead of push_t.* (a variant)")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every model")
    args = parser.parse_args(argv)
    if error := tag_error(args.tag):
        parser.error(error)
    if any(n < 1 for n in args.ablate_n_action_steps):
        parser.error(f"--ablate-n-action-steps {args.ablate_n_action_steps} must all be >= 1")
    counts = ("demos", "eval_every", "curve_episodes", "episodes", "n_envs", "threads")
    optional = ("train_steps", "max_episode_steps")
    if min(v for v in (getattr(args, name) for name in (*counts, *optional)) if v is not None) < 1:
        names = ", ".join(f"--{name.replace('_', '-')}" for name in (*counts, *optional))
        parser.error(f"{names} must be >= 1")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        payload = run_benchmark(args)
    except BenchmarkError as exc:
        sys.exit(f"bench_push_t.py: error: {exc}")
    stem = output_stem(args)
    print((args.out / f"{stem}.md").read_text())
    print(f"wall time {payload['wall_time_s'] / 60:.1f} min; results in {args.out}/{stem}.{{json,md}}")


if __name__ == "__main__":
    main()
