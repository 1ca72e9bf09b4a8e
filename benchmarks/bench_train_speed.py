"""Training throughput of the configs people run, old recipe against new, measured in one run on one machine.

Each case is train.py's whole loop (data windows, normalization, augmentation, encoder, denoiser, loss,
backward, clipping, fused AdamW, EMA) on a real demonstration store, for ``--steps`` optimizer steps with
validation and rollouts off. Its rate is taken from the run's log between step ``--warmup`` and the last
step (training time only). The cases of a pair alternate ``--rounds`` times so a drift of the machine hits
both alike; the table gives each case's median steps/s and samples/s and the new/old ratio.

    python benchmarks/bench_train_speed.py                      # every pair
    python benchmarks/bench_train_speed.py --pairs metaworld-image --steps 200

Pairs: ``metaworld-image`` (drawer-open-v3, 10 demos, 84 px image + agent_pos: bench_metaworld's config
before this recipe and now) and ``push_t-state`` (200 demos, low-dim state: ``training=cpu`` under the bf16
autocast that amp=auto chose before, against ``configs/experiment/push_t_state.yaml``; their batches differ,
so compare samples/s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from policy.optim import autocast_enabled, resolve_device
from results_io import RESULTS_DIR, write_json
from training_runs import compose_train_config, run_training

METAWORLD = ["task=metaworld", "task.name=drawer-open-v3", "task.n_demos=10", "task.env_kwargs.image_size=84"]
# name -> (store overrides, {case: (torch threads, train.py overrides)})
PAIRS: dict[str, tuple[list[str], dict[str, tuple[int, list[str]]]]] = {
    "metaworld-image": (
        METAWORLD,
        {
            "old, bench default threads": (1, ["~recipe", "policy.encoder.crop_shape=[76,76]"]),
            "old": (os.cpu_count() or 1, ["~recipe", "policy.encoder.crop_shape=[76,76]"]),
            "new": (os.cpu_count() or 1, ["+experiment=metaworld"]),
        },
    ),
    "push_t-state": (
        ["task=push_t", "obs=state"],
        {
            "old, bench default threads": (1, ["~recipe", "training=cpu", "amp=true"]),  # bf16: amp=auto's choice then
            "old": (os.cpu_count() or 1, ["~recipe", "training=cpu", "amp=true"]),
            "new": (os.cpu_count() or 1, ["+experiment=push_t_state"]),
        },
    ),
}


def rate(run_dir: Path, warmup: int) -> float:
    """Steps per training second between step ``warmup`` and the last logged step."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    timed = [r for r in records if "train_time_s" in r]
    first = min((r for r in timed if r["step"] >= warmup), key=lambda r: r["step"])
    last = max(timed, key=lambda r: r["step"])
    return (last["step"] - first["step"]) / (last["train_time_s"] - first["train_time_s"])


def run_case(store: Path, store_overrides: list[str], overrides: list[str], threads: int, args: argparse.Namespace):
    """Train one case from scratch in a fresh run dir over ``store``; returns (steps/s, batch size, config)."""
    run_dir = Path(tempfile.mkdtemp(dir=store.parent))
    cfg = compose_train_config(
        [
            *store_overrides,
            *overrides,
            f"task.dataset_path={store}",
            f"training.max_steps={args.steps}",
            "training.log_every=10",
            f"training.val_every={args.steps}",
            "training.val_batches=1",
            f"training.checkpoint_every={args.steps}",
            "rollout.every=0",
            f"name=bench_train_speed_{run_dir.name}",
        ]
    )
    torch.set_num_threads(threads)
    run_training(cfg, run_dir, progress=False)
    return rate(run_dir, args.warmup), int(cfg.training.batch_size), cfg


def main(argv: Sequence[str] | None = None) -> None:
    """Run every pair's cases alternately, print the table and write bench_train_speed.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per case run")
    parser.add_argument("--warmup", type=int, default=30, help="steps left out of the rate")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the cases of a pair")
    parser.add_argument("--work-dir", type=Path, default=Path("outputs") / "bench_train_speed")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_train_speed.json")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for pair in args.pairs:
        store_overrides, cases = PAIRS[pair]
        rates: dict[str, list[float]] = {case: [] for case in cases}
        info = {}
        for _ in range(args.rounds):
            for k, (case, (threads, overrides)) in enumerate(cases.items()):
                store = args.work_dir / f"{pair}_case{k}.zarr"  # cases may observe differently (camera, size)
                steps_per_s, batch, cfg = run_case(store, store_overrides, overrides, threads, args)
                rates[case].append(steps_per_s)
                info[case] = {
                    "threads": threads,
                    "overrides": overrides,
                    "batch_size": batch,
                    "bf16_autocast": autocast_enabled(cfg.amp, resolve_device(cfg.device), images=cfg.obs == "image"),
                    "down_dims": list(cfg.policy.denoiser.down_dims),
                    "n_obs_steps": int(cfg.policy.n_obs_steps),
                    "horizon": int(cfg.policy.horizon),
                }
        for case in cases:
            median = statistics.median(rates[case])
            rows.append(
                {
                    "pair": pair,
                    "case": case,
                    "steps_per_s": median,
                    "samples_per_s": median * info[case]["batch_size"],
                    "rounds_steps_per_s": rates[case],
                    **info[case],
                }
            )
        new = rows[-1]
        for old in rows[-len(cases) : -1]:
            old["new_speedup_steps"] = new["steps_per_s"] / old["steps_per_s"]
            old["new_speedup_samples"] = new["samples_per_s"] / old["samples_per_s"]
    print(
        "| pair | case | threads | batch | bf16 | UNet | n_obs | steps/s | samples/s | "
        "new's speedup (steps/s) | new's speedup (samples/s) |"
    )
    print("|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['new_speedup_steps']:.2f}x" if "new_speedup_steps" in r else ""
        samples = f"{r['new_speedup_samples']:.2f}x" if "new_speedup_samples" in r else ""
        print(
            f"| {r['pair']} | {r['case']} | {r['threads']} | {r['batch_size']} | {r['bf16_autocast']} | "
            f"{r['down_dims']} | {r['n_obs_steps']} | {r['steps_per_s']:.2f} | {r['samples_per_s']:.0f} | {ratio} | "
            f"{samples} |"
        )
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    write_json(
        args.out,
        {
            "machine": {
                "platform": platform.platform(),
                "torch": torch.__version__,
                "cpus": os.cpu_count(),
                "avx512_bf16": "avx512_bf16" in cpu_flags,
                "amx_bf16": "amx_bf16" in cpu_flags,
                "load_average": os.getloadavg(),
            },
            "steps": args.steps,
            "warmup": args.warmup,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
