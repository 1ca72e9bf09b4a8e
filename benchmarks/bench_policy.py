"""Policy speed: parameters, denoiser forward, predict_action per sampler and a training step.

Configs are Diffusion Policy's UNet sizes with low-dim (20-d state) and image (two 84x84 frames,
ResNet-18 GroupNorm encoder with 76x76 crops, + 2-d agent_pos) observations, horizon 16,
n_obs_steps 2. A training step is compute_loss + backward + fused AdamW step + EMA update.
Inference is at batch 1 in eval mode under inference_mode. ``--compile`` adds
torch.compile'd inference (and its first-call time), ``--bf16`` a bfloat16 denoiser copy for
inference and bfloat16 autocast for training. With ``--reference-python`` (the interpreter of a LeRobot
0.4.4 environment, ``../shared/perfref/README.md``) the training steps and the DDIM-10 prediction are timed
beside LeRobot's DiffusionPolicy, the same UNet with the same parameter count, in the same run: the two sides
alternate ``ROUNDS`` times and each reports its median per round. Results go to
benchmarks/results/bench_policy.json.

    python benchmarks/bench_policy.py --reference-python /path/to/lerobot-venv/bin/python --bf16
    python benchmarks/bench_policy.py --only unet64-lowdim --compile --bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from data.normalizer import Normalizer
from policy.chunk_policy import ChunkPolicy
from policy.consistency import ConsistencyDistillation
from policy.ema import EMA
from policy.objectives import DDPM, FlowMatching
from policy.obs_encoder import ObsEncoder
from policy.samplers import ConsistencySampler, DDIMSampler, DDPMSampler, EulerSampler, ShortcutSampler
from policy.shortcut import ShortcutFlow
from policy.unet import ConditionalUnet1D
from results_io import RESULTS_DIR, write_json

HORIZON, N_OBS, N_ACT, ACTION_DIM = 16, 2, 8, 2
LOW_DIM_META = {"state": {"shape": [20], "type": "low_dim"}}
IMAGE_META = {"image": {"shape": [84, 84, 3], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}}
CONFIGS = {
    "unet64-lowdim": ((64, 128, 256), LOW_DIM_META),
    "unet256-lowdim": ((256, 512, 1024), LOW_DIM_META),
    "unet64-image": ((64, 128, 256), IMAGE_META),
    "unet256-image": ((256, 512, 1024), IMAGE_META),
}
# Targets: at most 0.5x the reference's inference time, at least 1.5x its training throughput.
TARGET_RATIO = {"predict": 0.5, "train": 1 / 1.5}
ROUNDS = 2  # compared metrics alternate ours / reference this many times; each side reports its median per round


def median_ms(
    fn: Callable[[], object], budget_s: float, min_reps: int = 3, max_reps: int = 30, warmup: int = 1
) -> float:
    """Median wall time (ms) of fn after ``warmup`` calls; repetitions fit a time budget."""
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        last = time.perf_counter() - start
    reps = int(min(max_reps, max(min_reps, budget_s / max(last, 1e-6))))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def make_batch(meta: dict, batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random raw batch: uint8 images, float low-dim obs, float actions."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, m in meta.items():
        shape = (batch, N_OBS, *m["shape"])
        out[key] = (
            torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
            if m["type"] == "rgb"
            else torch.randn(shape, generator=g)
        )
    out["action"] = torch.randn(batch, HORIZON, ACTION_DIM, generator=g)
    return {k: v.to(device) for k, v in out.items()}


def build(
    down_dims: tuple[int, ...], meta: dict, objective: object, sampler: object, device: torch.device
) -> ChunkPolicy:
    """ChunkPolicy with DP's encoder and UNet settings and a normalizer fitted on random data."""
    torch.manual_seed(0)
    encoder = ObsEncoder(meta, backbone="resnet18", crop_shape=(76, 76), feature_dim=64, num_keypoints=32)
    step_conditioned = bool(getattr(objective, "step_conditioned", False))  # shortcut models take the step size
    denoiser = ConditionalUnet1D(
        ACTION_DIM, encoder.output_dim, N_OBS, HORIZON, down_dims, 5, 8, 128, step_conditioned=step_conditioned
    )
    policy = ChunkPolicy(encoder, denoiser, objective, sampler, HORIZON, N_OBS, N_ACT, ACTION_DIM, meta).to(device)
    fit_data = {k: v.flatten(0, 1).cpu() for k, v in make_batch(meta, 8, torch.device("cpu")).items()}
    policy.set_normalizer(Normalizer.fit(fit_data, policy.normalizer_modes()))
    return policy


def reference_ms(python: str, name: str, batch: int, bf16: bool, threads: int) -> dict:
    """LeRobot's DiffusionPolicy on the same config, timed by benchmarks/lerobot_reference.py under ``python``."""
    down_dims, meta = CONFIGS[name]
    image = meta is IMAGE_META
    cmd = [python, str(Path(__file__).with_name("lerobot_reference.py")), "--down-dims", *map(str, down_dims)]
    cmd += ["--state-dim", str(2 if image else 20), "--image-size", str(84 if image else 0), "--crop-size", "76"]
    cmd += ["--action-dim", str(ACTION_DIM), "--batch", str(batch), "--threads", str(threads)]
    cmd += ["--bf16"] if bf16 else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"reference run failed ({' '.join(cmd)}): {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_config(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """All measurements of one config; with --reference-python the compared ones alternate with LeRobot's."""
    down_dims, meta = CONFIGS[name]
    big = down_dims[0] >= 256
    budget = args.budget * (0.5 if big else 1.0)
    rows: list[dict] = []

    def add(metric: str, ms: float, note: str = "", ref: float | None = None) -> None:
        rows.append(
            {
                "config": name,
                "metric": metric,
                "ours_ms": ms,
                "reference_ms": ref,
                "ratio": ms / ref if ref else None,
                "note": note,
            }
        )
        ratio = f"{ms / ref:6.2f}" if ref else "      "
        ref_text = f"{ref:.2f}" if ref else ""
        print(f"{name:15s} {metric:26s} {ms:10.2f} {ref_text:>9} {ratio} {note}", flush=True)

    ddpm = build(down_dims, meta, DDPM(), DDIMSampler(10), device)
    counts = {
        "encoder": sum(p.numel() for p in ddpm.encoder.parameters()),
        "denoiser": sum(p.numel() for p in ddpm.denoiser.parameters()),
    }
    rows.append({"config": name, "metric": "parameters", **counts})
    print(f"{name:15s} parameters: denoiser {counts['denoiser']:,}, encoder {counts['encoder']:,}", flush=True)

    obs1 = {k: v for k, v in make_batch(meta, 1, device).items() if k != "action"}
    ddpm.eval()
    with torch.inference_mode():
        cond = ddpm.encode(obs1)
        bound = ddpm.denoiser.bind(cond)
        x, t = torch.randn(1, HORIZON, ACTION_DIM, device=device), torch.full((1,), 50.0, device=device)
        add("denoiser forward b1", median_ms(lambda: bound(x, t), budget))
        add("encode obs b1", median_ms(lambda: ddpm.encode(obs1), budget))
    gen = torch.Generator(device=device).manual_seed(0)
    add("predict DDIM-10", median_ms(lambda: ddpm.predict_action(obs1, generator=gen), budget))
    ancestral = DDPMSampler()
    add(
        "predict DDPM-100",
        median_ms(
            lambda: ddpm.predict_action(obs1, sampler=ancestral, generator=gen), budget, min_reps=2 if big else 3
        ),
    )
    flow = build(down_dims, meta, FlowMatching(), EulerSampler(10), device).eval()
    for steps in (1, 4, 10):
        add(
            f"predict Euler-{steps}",
            median_ms(lambda: flow.predict_action(obs1, num_steps=steps, generator=gen), budget),
        )

    one_step = {
        "shortcut-1": (ShortcutFlow(), ShortcutSampler(1)),
        "consistency-1": (ConsistencyDistillation(), ConsistencySampler(1)),
    }
    for label, (objective, sampler) in one_step.items():  # the few-step models at one network call (issue 14)
        few = build(down_dims, meta, objective, sampler, device).eval()
        add(f"predict {label}", median_ms(lambda: few.predict_action(obs1, generator=gen), budget))

    if args.compile:
        ddpm.compile_denoiser = True
        start = time.perf_counter()
        ddpm.predict_action(obs1, generator=gen)
        add("compile (first predict)", 1e3 * (time.perf_counter() - start), "torch.compile")
        add("predict DDIM-10", median_ms(lambda: ddpm.predict_action(obs1, generator=gen), budget), "torch.compile")
        ddpm.compile_denoiser = False
    if args.bf16:
        ddpm.denoiser_dtype = "bfloat16"
        add("predict DDIM-10", median_ms(lambda: ddpm.predict_action(obs1, generator=gen), budget), "bf16 denoiser")
        ddpm.denoiser_dtype = None

    batches = (64,) if meta is IMAGE_META and big and not args.full else (64, 256)
    for batch in batches:
        for bf16 in (False, True) if args.bf16 else (False,):
            note = "bf16 autocast" if bf16 else ""
            if args.reference_python is None:
                add(f"train step b{batch}", train_step_ms(down_dims, meta, batch, device, budget, bf16), note)
                continue
            ours, ref, ref_predict = [], [], []
            for _ in range(ROUNDS):  # alternate, so drifts of the machine hit both sides alike
                ours.append(train_step_ms(down_dims, meta, batch, device, budget, bf16))
                timed = reference_ms(args.reference_python, name, batch, bf16, args.threads)
                ref.append(timed["train_step_ms"])
                ref_predict.append(timed["predict_ddim10_ms"])
            add(f"train step b{batch}", statistics.median(ours), note, statistics.median(ref))
            rows[-1].update(ours_rounds_ms=ours, reference_rounds_ms=ref, reference_last_run=timed)
            if batch == batches[0] and not bf16:
                mine = [median_ms(lambda: ddpm.predict_action(obs1, generator=gen), budget) for _ in range(ROUNDS)]
                add("predict DDIM-10 (compared)", statistics.median(mine), "", statistics.median(ref_predict))
    return rows


def train_step_ms(
    down_dims: tuple[int, ...], meta: dict, batch: int, device: torch.device, budget: float, bf16: bool
) -> float:
    """Median ms of compute_loss + backward + AdamW step + EMA update."""
    policy = build(down_dims, meta, DDPM(), DDIMSampler(10), device).train()
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-6, fused=True)
    ema = EMA(policy)
    data = make_batch(meta, batch, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = policy.compute_loss(data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update_parameters(policy)
        if cuda:
            torch.cuda.synchronize()

    return median_ms(step, budget, min_reps=3, warmup=3)  # the first steps allocate and build oneDNN kernels


def main() -> None:
    """Parse arguments, run the selected configs, print the table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), default=list(CONFIGS), help="configs to run")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of repetitions per measurement")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the denoiser")
    parser.add_argument("--bf16", action="store_true", help="also time a bf16 denoiser and bf16-autocast training")
    parser.add_argument("--full", action="store_true", help="include the image train step at batch 256 for unet256")
    parser.add_argument(
        "--reference-python",
        default=None,
        help="python of a LeRobot 0.4.4 venv (../shared/perfref/README.md): time its DiffusionPolicy alongside",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "bench_policy.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    print(
        f"{'config':15s} {'metric':26s} {'ours ms':>10} {'ref ms':>9} {'ratio'} (target <= "
        f"{TARGET_RATIO['predict']} predict, <= {TARGET_RATIO['train']:.2f} train)"
    )
    load_before = os.getloadavg()
    rows = [row for name in args.only for row in bench_config(name, args, device)]
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    write_json(
        args.out,
        {
            "torch": torch.__version__,
            "device": str(device),
            "threads": args.threads,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "target_ratio": TARGET_RATIO,
            "reference": "LeRobot 0.4.4 DiffusionPolicy, same run" if args.reference_python else None,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
