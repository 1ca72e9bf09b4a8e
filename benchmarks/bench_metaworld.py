"""MetaWorld with few demonstrations, DP3's protocol for its Diffusion Policy baseline: DDPM and flow image policies.

For each MetaWorld v3 task: collect ``--demos`` demonstrations with MetaWorld's scripted expert (env seeds
0..demos-1), train a DDPM (epsilon) and a flow-matching policy on ``image`` + ``agent_pos`` with train.py's
CPU-sized backbone (configs/policy/unet.yaml; the two objectives share every other setting), and evaluate
each EMA checkpoint with eval.evaluate on ``--episodes`` fresh layouts (env seeds ``--eval-seed + i``).
DDPM samples with its default DDIM (10 steps), flow with Euler (10 steps). An episode succeeds if MetaWorld
reports success at any step; it ends there or after ``--max-episode-steps`` (DP3's MetaWorld wrapper: 200).

Usage (from the repo root):
    python benchmarks/bench_metaworld.py --tasks reach-v3 push-v3 --train-steps 600 --episodes 20 --reuse
Writes metaworld.json and metaworld.md to --out (default benchmarks/results) and prints the table. Run dirs
are fixed (``<work-dir>/<task>/<objective>``, demos in ``<work-dir>/<task>/demos_<px>px.zarr``); with --reuse
a finished checkpoint is not retrained, an interrupted one resumes and a finished evaluation is not re-run.
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

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data.atomic import write_text_atomic
from data.collect import collect
from data.replay_buffer import ReplayBuffer
from envs.metaworld_tasks import METAWORLD_MAX_EPISODE_STEPS, METAWORLD_TASK_NAMES
from envs.task_env import TaskEnv
from policy.checkpoint import checkpoint_config, load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.evaluation import evaluate
from policy.optim import autocast_enabled, resolve_device
from results_io import RESULTS_DIR, write_json
from training_runs import BenchmarkError, compose_train_config, existing_checkpoint, run_training

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_TASKS = ("reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3", "pick-place-v3")
OBJECTIVES = ("ddpm", "flow")
TRAIN_FILE = "bench_metaworld_train.json"  # training wall time kept in each run dir, for --reuse
EVAL_FILE = "bench_metaworld_eval.json"  # the finished evaluation kept in each run dir, for --reuse
SAME_MODEL_KEYS = ("task", "obs", "seed", "policy", "objective", "sampler", "training", "dataset", "ema", "amp")
# DP3 (Ze et al., RSS 2024, arXiv:2403.03954), Meta-World table: its image Diffusion Policy baseline, 10 demos,
# mean success per difficulty group (groups of Seo et al. 2023, "Masked World Models", as DP3 uses them).
DP3_DIFFUSION_POLICY = {"easy": 0.836, "medium": 0.311, "hard": 0.090, "very hard": 0.266}
DIFFICULTY = {
    "reach-v3": "easy",
    "drawer-open-v3": "easy",
    "button-press-topdown-v3": "easy",
    "push-v3": "hard",
    "pick-place-v3": "hard",
}
DP3_EPISODE_STEPS = 200  # DP3's MetaWorldEnv ends an episode after 200 steps


def train_overrides(task: str, objective: str, args: argparse.Namespace, store: Path) -> list[str]:
    """train.py overrides for one model; the two objectives of a task differ only in ``objective``."""
    return [
        "task=metaworld",
        f"task.name={task}",
        f"task.n_demos={args.demos}",
        f"task.dataset_path={store}",
        f"task.env_kwargs.image_size={args.image_size}",
        f"task.max_episode_steps={args.max_episode_steps}",
        f"policy.encoder.crop_shape=[{args.crop_size},{args.crop_size}]",
        "obs=image",
        f"objective={objective}",
        f"seed={args.seed}",
        f"training.max_steps={args.train_steps}",
        f"training.batch_size={args.batch_size}",
        f"amp={args.amp}",
        "dataset.val_ratio=0",
        "dataset.collect_workers=1",  # every demo trains
        f"name=bench_metaworld_{task}_{objective}",
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
        "expert_success_rate": summary["expert_success_rate"] if summary["new_episodes"] else None,  # NaN if none tried
        "wall_time_s": time.perf_counter() - start,
    }


def train_model(cfg: DictConfig, run_dir: Path, reuse: bool, progress: bool = True) -> dict[str, Any]:
    """Train cfg's model in run_dir (resuming with reuse); returns checkpoint, steps, steps/s and summed wall time."""
    record_path = run_dir / TRAIN_FILE
    ckpt = existing_checkpoint(cfg, run_dir, reuse, SAME_MODEL_KEYS)
    start_step = 0 if ckpt is None else int(ckpt["step"])
    record = json.loads(record_path.read_text()) if ckpt is not None and record_path.exists() else {}
    if start_step >= cfg.training.max_steps and record.get("steps") == start_step:
        return record
    start = time.perf_counter()
    summary = run_training(cfg, run_dir, progress=progress)
    if summary["stopped_by"]:
        raise KeyboardInterrupt(f"training stopped by {summary['stopped_by']}; rerun with --reuse to continue")
    record = {
        "checkpoint": summary["latest"],
        "steps": summary["step"],
        "steps_per_s": summary.get("steps_per_s"),  # of the last session
        "wall_time_s": record.get("wall_time_s", 0.0) + time.perf_counter() - start,  # summed over finished sessions
        "timed_steps": record.get("timed_steps", 0) + summary["step"] - start_step,  # steps those sessions trained
    }
    write_json(record_path, record)
    return record


def evaluate_model(checkpoint: Path, settings: Mapping[str, int], reuse: bool, progress: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint's EMA policy with its own sampler on episodes eval_seed + i; cached in its run dir."""
    ckpt = load_checkpoint(checkpoint)
    settings = {**settings, "checkpoint_step": int(ckpt["step"])}
    cache_path = checkpoint.parent.parent / EVAL_FILE
    if reuse and cache_path.exists():
        cached = json.loads(cache_path.read_text())
        if cached["settings"] == settings:
            return cached["result"]
    policy = ChunkPolicy.from_checkpoint(checkpoint, loaded=ckpt)
    result = evaluate(
        policy,
        TaskEnv.from_config(checkpoint_config(ckpt)["task"]),
        n_episodes=settings["episodes"],
        n_envs=settings["n_envs"],
        seed=settings["eval_seed"],
        progress=progress,
    )
    result = {k: v for k, v in result.items() if k != "videos"}
    write_json(cache_path, {"settings": settings, "result": result})
    return result


def result_row(
    task: str, objective: str, cfg: DictConfig, trained: Mapping[str, Any], result: Mapping[str, Any]
) -> dict[str, Any]:
    """One table row: the model's training and its evaluation."""
    return {
        "task": task,
        "objective": objective,
        "difficulty": DIFFICULTY.get(task),
        "sampler": result["sampler"],
        "sampler_steps": result["num_steps"],
        "nfe": result["nfe"],
        "success_rate": result["success_rate"],
        "success_ci95": result["success_ci95"],
        "mean_max_reward": result["mean_max_reward"],
        "mean_length": result["mean_length"],
        "n_episodes": result["n_episodes"],
        "n_errors": result["n_errors"],
        "train_steps": trained["steps"],
        "batch_size": int(cfg.training.batch_size),
        "train_wall_time_s": trained["wall_time_s"],
        "train_timed_steps": trained["timed_steps"],
        "train_steps_per_s": trained["steps_per_s"],
        "eval_wall_time_s": result["wall_time_s"],
        "latency_ms_median": result["latency_ms"]["median"],
        "checkpoint": trained["checkpoint"],
        "episodes": result["episodes"],
    }


def averages(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per objective: mean success, mean max reward and summed train/eval wall time over the tasks it ran on."""
    out = []
    for objective in dict.fromkeys(r["objective"] for r in rows):
        mine = [r for r in rows if r["objective"] == objective]
        out.append(
            {
                "objective": objective,
                "n_tasks": len(mine),
                "success_rate": statistics.fmean(r["success_rate"] for r in mine),
                "mean_max_reward": statistics.fmean(r["mean_max_reward"] for r in mine),
                "train_wall_time_s": sum(r["train_wall_time_s"] for r in mine),
                "eval_wall_time_s": sum(r["eval_wall_time_s"] for r in mine),
            }
        )
    return out


def markdown_report(payload: Mapping[str, Any]) -> str:
    """The Markdown table of every (task, objective), the per-objective averages and DP3's reference numbers."""
    p = payload["protocol"]
    planned = len(p["tasks"]) * len(p["objectives"])
    lines = [
        f"MetaWorld v3, {p['demos']} expert demos per task, `image` ({p['image_size']} px, crop {p['crop_size']}) + "
        f"`agent_pos`; UNet {p['down_dims']}, small image encoder, horizon {p['horizon']}, {p['n_action_steps']} "
        f"actions per chunk; {p['train_steps']} training steps x batch {p['batch_size']} (bf16 autocast {p['amp']}); "
        f"{p['episodes']} eval episodes per model on fresh layouts "
        f"(seeds {p['eval_seed']}..{p['eval_seed'] + p['episodes'] - 1}), "
        f"at most {p['max_episode_steps']} steps each; CPU, {p['torch_threads']} torch thread(s), "
        f"{p['n_envs']} env worker(s).",
        ""
        if len(payload["rows"]) == planned
        else f"\n**Partial: {len(payload['rows'])} of {planned} models finished.**\n",
        "| task | DP3 group | objective | sampler | success (95% CI) | mean max reward | mean length | train steps | "
        "train wall s | eval wall s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        low, high = r["success_ci95"]
        timed = "" if r["train_timed_steps"] == r["train_steps"] else f" ({r['train_timed_steps']} steps timed)"
        lines.append(
            f"| {r['task']} | {r['difficulty'] or '-'} | {r['objective']} | {r['sampler']}-{r['sampler_steps']} | "
            f"{r['success_rate']:.2f} ({low:.2f}-{high:.2f}) | {r['mean_max_reward']:.2f} | {r['mean_length']:.0f} | "
            f"{r['train_steps']} | {r['train_wall_time_s']:.0f}{timed} | {r['eval_wall_time_s']:.0f} |"
        )
    lines += [
        "",
        "| objective | tasks | mean success | mean max reward | train wall s (sum) | eval wall s (sum) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for a in payload["averages"]:
        lines.append(
            f"| {a['objective']} | {a['n_tasks']} | {a['success_rate']:.2f} | {a['mean_max_reward']:.2f} | "
            f"{a['train_wall_time_s']:.0f} | {a['eval_wall_time_s']:.0f} |"
        )
    demos = "; ".join(
        f"{task} {c['episodes']} episodes / {c['steps']} steps in {c['wall_time_s']:.0f} s"
        for task, c in payload["collection"].items()
    )
    lines += [
        "",
        f"Demonstrations (MetaWorld's scripted expert, env seeds 0.., all used for training): {demos}. "
        "Train wall time includes loading the demos, building the model and writing checkpoints; eval wall "
        "time is the rollouts alone.",
    ]
    ref = ", ".join(f"{group} {rate:.1%}" for group, rate in DP3_DIFFUSION_POLICY.items())
    lines += [
        "",
        f"Reference: DP3 (Ze et al. 2024, arXiv:2403.03954) reports its image Diffusion Policy baseline with "
        f"10 demos at {ref} mean success per Meta-World difficulty group (groups of Seo et al. 2023 as DP3 uses "
        "them: reach, drawer-open and button-press-topdown easy, push and pick-place hard; its per-task "
        "numbers are not reproduced here). DP3 trains for 3000 epochs on a GPU, "
        "evaluates 20 episodes of 200 steps and averages the best 5 evaluations over training and 3 seeds; "
        "the rows above are one seed, the final EMA checkpoint and a CPU-sized budget.",
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    return "\n".join(lines)


def write_report(
    args: argparse.Namespace, cfg: DictConfig, rows: list[dict[str, Any]], collected: dict[str, Any], wall_time_s: float
) -> dict[str, Any]:
    """Write metaworld.json and metaworld.md to args.out for the rows so far; returns the JSON payload."""
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    payload = {
        "command": " ".join(["python", "benchmarks/bench_metaworld.py", *args.argv]),
        "protocol": {
            "tasks": args.tasks,
            "objectives": args.objectives,
            "demos": args.demos,
            "image_size": args.image_size,
            "crop_size": args.crop_size,
            "down_dims": policy_cfg["denoiser"]["down_dims"],
            "horizon": policy_cfg["horizon"],
            "n_action_steps": policy_cfg["n_action_steps"],
            "train_steps": args.train_steps,
            "batch_size": args.batch_size,
            "amp": autocast_enabled(cfg.amp, resolve_device(cfg.device)),  # resolved: bf16 autocast on or off
            "seed": args.seed,
            "max_episode_steps": args.max_episode_steps,
            "episodes": args.episodes,
            "n_envs": args.n_envs,
            "eval_seed": args.eval_seed,
            "torch_threads": torch.get_num_threads(),
        },
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "dp3_diffusion_policy_by_group": DP3_DIFFUSION_POLICY,
        "collection": collected,
        "wall_time_s": wall_time_s,
        "rows": rows,
        "averages": averages(rows),
    }
    out = Path(args.out)
    write_json(out / "metaworld.json", payload)
    write_text_atomic(out / "metaworld.md", markdown_report(payload))
    return payload


def run_benchmark(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Collect, train and evaluate every (task, objective), rewriting the report after each model; returns it."""
    start = time.perf_counter()
    settings = {"episodes": args.episodes, "n_envs": args.n_envs, "eval_seed": args.eval_seed}
    rows, collected = [], {}
    jobs = [(task, objective) for task in args.tasks for objective in args.objectives]
    for task, objective in tqdm(jobs, desc="bench_metaworld", unit="model", disable=not progress):
        store = Path(args.work_dir) / task / f"demos_{args.image_size}px.zarr"
        cfg = compose_train_config(train_overrides(task, objective, args, store))
        if task not in collected:
            collected[task] = collect_demos(cfg, store, progress)
        trained = train_model(cfg, Path(args.work_dir) / task / objective, args.reuse, progress)
        result = evaluate_model(Path(trained["checkpoint"]), settings, args.reuse, progress)
        rows.append(result_row(task, objective, cfg, trained, result))
        payload = write_report(args, cfg, rows, collected, time.perf_counter() - start)
    return payload


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (errors for values that cannot run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="MetaWorld v3 task names")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES, help="models per task")
    parser.add_argument("--demos", type=int, default=10, help="expert demonstrations per task (DP3: 10)")
    parser.add_argument("--train-steps", type=int, default=2000, help="optimizer steps per model")
    parser.add_argument("--batch-size", type=int, default=64, help="training windows per step")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per model (DP3: 20)")
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
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--eval-seed", type=int, default=100000, help="evaluation episode i is reset with this + i")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / "outputs" / "bench_metaworld", help="demos and run dirs"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where metaworld.{json,md} go")
    parser.add_argument("--reuse", action="store_true", help="keep finished checkpoints and evaluations in --work-dir")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for every model, e.g. policy.horizon=8")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(METAWORLD_TASK_NAMES))
    if unknown:
        parser.error(f"unknown MetaWorld tasks {unknown}; choose from {list(METAWORLD_TASK_NAMES)}")
    if (
        min(
            args.demos,
            args.train_steps,
            args.batch_size,
            args.episodes,
            args.max_episode_steps,
            args.n_envs,
            args.threads,
        )
        < 1
    ):
        parser.error(
            "--demos, --train-steps, --batch-size, --episodes, --max-episode-steps, --n-envs and --threads must be >= 1"
        )
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
    print((args.out / "metaworld.md").read_text())
    print(f"wall time {payload['wall_time_s'] / 60:.1f} min; results in {args.out}/metaworld.{{json,md}}")


if __name__ == "__main__":
    main()
