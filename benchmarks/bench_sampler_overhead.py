"""Per-call sampler overhead: our samplers vs diffusers' scheduler loops, with a near-free denoiser.

The denoiser is x -> 0.1 x, so the time measured is the sampler's own work (coefficient lookups, tensor ops, noise
draws, Python bookkeeping). Batch (64, 16, 10) float32 on CPU, one thread; median of --repeats calls after a warm-up.
DDPM schedulers: squaredcos_cap_v2, 100 training steps, trailing spacing on both sides.

Usage: python benchmarks/bench_sampler_overhead.py [--repeats 50] [--out PATH]
Prints a table and writes JSON (default benchmarks/results/sampler_overhead.json).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from policy.objectives import DDPM, FlowMatching
from policy.samplers import make_sampler
from results_io import RESULTS_DIR, write_json

SHAPE = (64, 16, 10)  # (B, T, Da)
DEFAULT_OUT = RESULTS_DIR / "sampler_overhead.json"
DIFFUSERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmsolver": DPMSolverMultistepScheduler}
CASES = (("ddpm", 100), ("ddpm", 10), ("ddim", 10), ("dpmsolver", 10), ("euler", 10), ("midpoint", 5), ("heun", 5))


def denoiser(x: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
    """Near-free stand-in network."""
    return 0.1 * x


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def diffusers_loop(scheduler, noise: torch.Tensor, num_steps: int, generator: torch.Generator) -> torch.Tensor:
    """The usual diffusers sampling loop."""
    scheduler.set_timesteps(num_steps)
    x = noise
    for t in scheduler.timesteps:
        x = scheduler.step(denoiser(x, t), t, x, generator=generator).prev_sample
    return x


def run(repeats: int) -> list[dict]:
    """Timing rows for every case."""
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    rows = []
    for name, steps in CASES:
        sampler = make_sampler(name)
        objective = DDPM() if sampler.objective_kind == "ddpm" else FlowMatching()
        ours = median_ms(
            lambda: sampler.sample(denoiser, objective, noise, num_steps=steps, generator=generator), repeats
        )
        row = {"sampler": name, "steps": steps, "nfe": sampler.nfe(steps), "ours_ms": ours, "diffusers_ms": None}
        if name in DIFFUSERS:
            scheduler = DIFFUSERS[name](
                num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing"
            )
            row["diffusers_ms"] = median_ms(lambda: diffusers_loop(scheduler, noise, steps, generator), repeats)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    lines = ["| sampler | steps | NFE | ours ms | diffusers ms | diffusers / ours |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        theirs = r["diffusers_ms"]
        ratio = f"{theirs / r['ours_ms']:.1f}x" if theirs is not None else "-"
        theirs_text = f"{theirs:.3f}" if theirs is not None else "-"
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['ours_ms']:.3f} | {theirs_text} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per case (median reported)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(1)
    rows = run(args.repeats)
    print(format_table(rows))
    payload = {
        "benchmark": "sampler_overhead",
        "shape": list(SHAPE),
        "repeats": args.repeats,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "rows": rows,
    }
    write_json(args.out, payload)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
