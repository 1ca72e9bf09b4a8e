"""Sampler accuracy against a closed form: exact mixture denoisers, error vs number of steps.

Data: the 1-D mixture 0.3 N(-2, 0.3^2) + 0.7 N(1.5, 0.6^2). Each sampler is given the exact denoiser (posterior
mean, hence exact eps / velocity), so every error below is the sampler's discretization error (plus, for the
stochastic DDPM sampler, its own Monte Carlo noise). The input noise is stratified (normal quantiles at
(i + 1/2) / n), so it carries no sampling error of its own. Mode statistics assign each sample to a mode by the
Bayes classifier of the true mixture, so a few samples stranded between the modes move a mode's std a lot; W1 (the
1-Wasserstein distance to the mixture, integral of |F_n - F|) is the steadier summary. DDPM models:
squaredcos_cap_v2, 100 training steps, epsilon prediction, no clipping, trailing spacing. Flow models: uniform grid,
time_scale 100.

Usage: python benchmarks/bench_sampler_accuracy.py [--n-samples 20000] [--seed 0] [--out PATH]
Prints a table and writes JSON (default benchmarks/results/sampler_accuracy.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
from pathlib import Path

import torch

from policy.gaussian_mixture import GaussianMixture, stratified_normal
from policy.objectives import DDPM, FlowMatching
from policy.samplers import SAMPLERS, make_sampler
from results_io import RESULTS_DIR, write_json

STEPS = (1, 2, 4, 8, 16, 20, 50, 100)
MIXTURE = GaussianMixture(weights=(0.3, 0.7), means=(-2.0, 1.5), stds=(0.3, 0.6))
DDPM_OBJECTIVE = DDPM(num_train_steps=100, beta_schedule="squaredcos_cap_v2", prediction="epsilon", clip_sample=False)
FLOW_OBJECTIVE = FlowMatching(time_scale=100.0)
DEFAULT_OUT = RESULTS_DIR / "sampler_accuracy.json"


def run(n_samples: int, seed: int) -> list[dict]:
    """Error rows for every sampler and valid step count."""
    mixture, ddpm, flow = MIXTURE, DDPM_OBJECTIVE, FLOW_OBJECTIVE
    noise = stratified_normal(n_samples)
    rows = []
    for name, sampler_cls in SAMPLERS.items():
        objective = {"ddpm": ddpm, "flow": flow}.get(sampler_cls.objective_kind)
        if objective is None:  # the regression head has no noise process to compare
            continue
        denoiser = mixture.ddpm_denoiser(ddpm) if objective is ddpm else mixture.flow_denoiser(flow)
        sampler = make_sampler(name)
        for steps in STEPS:
            if objective is ddpm and steps > ddpm.num_train_steps:
                continue
            generator = torch.Generator().manual_seed(seed)
            samples = sampler.sample(denoiser, objective, noise, num_steps=steps, generator=generator)
            errors = {**mixture.mode_errors(samples), "w1": mixture.wasserstein1(samples)}
            rows.append({"sampler": name, "steps": steps, "nfe": sampler.nfe(steps), **errors})
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    lines = [
        "| sampler | steps | NFE | mode-weight err | max rel mean err | max rel std err | W1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['weight_err']:.4f} | "
            f"{r['mean_rel_err']:.4f} | {r['std_rel_err']:.4f} | {r['w1']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000, help="samples per sampler run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the DDPM sampler's own noise")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args()
    if args.n_samples < 2:
        parser.error("--n-samples must be >= 2")
    torch.set_num_threads(1)
    rows = run(args.n_samples, args.seed)
    print(format_table(rows))
    json_rows = [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows]
    payload = {
        "benchmark": "sampler_accuracy",
        "mixture": dataclasses.asdict(MIXTURE),
        "n_samples": args.n_samples,
        "seed": args.seed,
        "noise": "stratified normal quantiles",
        "ddpm_objective": repr(DDPM_OBJECTIVE),
        "flow_objective": repr(FLOW_OBJECTIVE),
        "samplers": {name: repr(make_sampler(name)) for name in SAMPLERS},
        "torch": torch.__version__,
        "platform": platform.platform(),
        "note": "null error = a mode received fewer than 2 samples "
        "(e.g. 1-step deterministic samplers collapse to one point)",
        "rows": json_rows,
    }
    write_json(args.out, payload)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
