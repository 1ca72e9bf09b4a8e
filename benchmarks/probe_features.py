"""Linear probe of trained policies' image features: do they say where the task's object is?

A policy can only steer towards what its encoder encodes. For each model (a checkpoint and the demo store it was
trained on) this encodes every stored frame with the checkpoint's EMA encoder in eval mode (the centre crop) and
fits, leaving one demo episode out at a time, a ridge regression from the per-camera image features to a target
slice of the store (``--target``, default ``state:4:7``: the object position in MetaWorld's 39-d observation);
then the same from the low-dim observations alone (``agent_pos``: once the hand heads for the object it predicts
the object too) and from both. Reported per model and target dimension: the held-out RMSE beside the target's
sd, and R^2 (1 - MSE / variance; 0 = no better than the mean), over all frames and over each episode's first
``--early`` frames alone. The early frames are the test: the hand has not moved yet, so only the image can say where
the object is, and image features that cannot mean the policy must guess where to reach, whatever its training loss.

The ridge is closed-form numpy on standardized features (a dozen lines): leave-one-episode-out over a few
thousand frames needs no library.

Usage (from the repo root):
    python benchmarks/probe_features.py --bench-dir outputs/bench_metaworld_7k   # a bench_metaworld.py work dir
    python benchmarks/probe_features.py --model drawer outputs/.../latest.ckpt data_store/metaworld_drawer-open-v3.zarr
Writes probe_features.{json,md} to --out (default benchmarks/results; --name renames them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from data.atomic import write_text_atomic
from data.replay_buffer import ReplayBuffer, ReplayBufferError
from policy.checkpoint import CheckpointError
from policy.chunk_policy import ChunkPolicy
from results_io import RESULTS_DIR, cpu_caption, machine_info, write_json
from training_runs import BenchmarkError

RIDGE = 1e-2  # ridge penalty on standardized features (per row: scaled by the training rows)
PREDICTORS = ("image", "low_dim", "image + low_dim")
VARYING = 0.05  # a target dimension counts in the mean R^2 when its sd is at least this fraction of the largest


def parse_target(text: str) -> tuple[str, int, int | None]:
    """``key`` or ``key:start:stop`` -> (key, start, stop); stop None = to the end."""
    parts = text.split(":")
    if len(parts) not in (1, 3) or not parts[0]:
        raise argparse.ArgumentTypeError(f"--target {text!r}: use KEY or KEY:START:STOP, e.g. state:4:7")
    if len(parts) == 1:
        return parts[0], 0, None
    try:
        start, stop = int(parts[1]), int(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--target {text!r}: START and STOP must be integers, e.g. state:4:7"
        ) from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"--target {text!r}: needs 0 <= START < STOP")
    return parts[0], start, stop


def ridge_loeo(features: np.ndarray, target: np.ndarray, episode: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """Held-out predictions (N, D) of ``target`` (N, D) from ``features`` (N, F), one episode left out per fit."""
    held_out = np.empty_like(target, dtype=np.float64)
    for e in np.unique(episode):
        train, test = episode != e, episode == e
        mean, sd = features[train].mean(0), features[train].std(0) + 1e-8
        x_train = np.c_[(features[train] - mean) / sd, np.ones(train.sum())]  # (n, F + 1)
        x_test = np.c_[(features[test] - mean) / sd, np.ones(test.sum())]
        penalty = ridge * train.sum() * np.eye(x_train.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        weights = np.linalg.solve(x_train.T @ x_train + penalty, x_train.T @ target[train])  # (F + 1, D)
        held_out[test] = x_test @ weights
    return held_out


def probe_scores(prediction: np.ndarray, target: np.ndarray) -> dict[str, list[float]]:
    """RMSE, target sd and R^2 per target dimension, and R^2 averaged over the dimensions that vary."""
    mse = ((prediction - target) ** 2).mean(0)
    var = target.var(0)
    r2 = np.where(var > 0, 1.0 - mse / np.maximum(var, 1e-30), 0.0)
    varying = np.sqrt(var) >= VARYING * np.sqrt(var).max() if var.max() > 0 else np.zeros(len(var), dtype=bool)
    return {
        "rmse": np.sqrt(mse).tolist(),
        "sd": np.sqrt(var).tolist(),
        "r2": r2.tolist(),
        "mean_r2": float(r2[varying].mean()) if varying.any() else None,  # over the dims that vary
    }


@torch.no_grad()
def encode_frames(
    policy: ChunkPolicy, frames: dict[str, np.ndarray], batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(image features (N, Fi), low-dim observations (N, Dl)) of N stored frames, each frame repeated To times."""
    encoder = policy.encoder
    if not encoder.rgb_keys:
        raise BenchmarkError("the checkpoint's policy has no image observation; the probe needs an image encoder")
    low_dim = sum(policy.obs_shapes[k][0] for k in encoder.low_dim_keys)
    n = len(next(iter(frames.values())))
    image_features = []
    for start in range(0, n, batch):
        obs = {
            k: torch.as_tensor(v[start : start + batch]).unsqueeze(1).expand(-1, policy.n_obs_steps, *v.shape[1:])
            for k, v in frames.items()
        }  # key -> (b, To, ...)
        encoded = policy.encode(obs)[:, -1].float()  # (b, Dc): image features first, then the low-dim keys
        image_features.append(encoded[:, : encoded.shape[1] - low_dim].numpy())
    lows = [frames[k].reshape(n, -1).astype(np.float64) for k in encoder.low_dim_keys]
    return np.concatenate(image_features).astype(np.float64), np.concatenate(lows, 1) if lows else np.zeros((n, 0))


def probe_model(
    name: str, checkpoint: Path, store: Path, target: tuple[str, int, int | None], early: int = 10
) -> dict[str, Any]:
    """Probe one model: its features of every frame of ``store``, and of each episode's first ``early``."""
    for path, what in ((checkpoint, "checkpoint"), (store, "store")):
        if not path.exists():
            raise BenchmarkError(f"{path} ({what} of model {name}) does not exist; check the path")
    try:
        policy = ChunkPolicy.from_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise BenchmarkError(f"model {name}: {exc}") from None
    try:
        buffer = ReplayBuffer.open(store, in_memory=False)
    except ReplayBufferError as exc:
        raise BenchmarkError(f"model {name}: {exc}") from None
    with buffer:
        return _probe_store(name, checkpoint, store, policy, buffer, target, early)


def _probe_store(
    name: str,
    checkpoint: Path,
    store: Path,
    policy: ChunkPolicy,
    buffer: ReplayBuffer,
    target: tuple[str, int, int | None],
    early: int,
) -> dict[str, Any]:
    """probe_model on an open store."""
    key, start, stop = target
    missing = [k for k in (*policy.obs_shapes, key) if k not in buffer.keys()]
    if missing:
        raise BenchmarkError(
            f"store {store} has no {missing} (keys: {sorted(buffer.keys())}); give the store model {name} trained on"
        )
    values = np.asarray(buffer[key], dtype=np.float64).reshape(buffer.n_steps, -1)
    if (stop or values.shape[1]) > values.shape[1]:
        raise BenchmarkError(f"--target {key}:{start}:{stop} is beyond {key}'s {values.shape[1]} dimensions")
    y = values[:, start:stop]  # (N, D)
    episode = np.searchsorted(buffer.episode_ends, np.arange(buffer.n_steps), side="right")
    if len(np.unique(episode)) < 2:
        raise BenchmarkError(f"store {store} has one episode; leaving one out needs at least 2")
    frames = {k: buffer[k] for k in policy.obs_shapes}
    image, low = encode_frames(policy, frames)
    inputs = {"image": image, "low_dim": low, "image + low_dim": np.c_[image, low]}
    step_in_episode = np.arange(len(y)) - np.r_[0, buffer.episode_ends][episode]
    subsets = {"all": np.ones(len(y), dtype=bool), f"first {early}": step_in_episode < early}
    rows = [
        {
            "frames": subset,
            "n_frames": int(m.sum()),
            "predictor": p,
            **probe_scores(ridge_loeo(inputs[p][m], y[m], episode[m]), y[m]),
        }
        for subset, m in subsets.items()
        for p in PREDICTORS
        if inputs[p].shape[1]
    ]
    return {
        "name": name,
        "checkpoint": str(checkpoint),
        "store": str(store),
        "frames": int(buffer.n_steps),
        "episodes": int(len(np.unique(episode))),
        "image_features": int(image.shape[1]),
        "low_dim_keys": list(policy.encoder.low_dim_keys),
        "probes": rows,
    }


def bench_dir_models(bench_dir: Path) -> list[tuple[str, Path, Path]]:
    """(name, checkpoint, store) of every finished model in a bench_metaworld.py work dir."""
    models = []
    for task_dir in sorted(p for p in bench_dir.iterdir() if p.is_dir()):
        stores = sorted(task_dir.glob("demos_*.zarr"))
        for ckpt in sorted(task_dir.glob("*/checkpoints/latest.ckpt")):
            if stores:
                models.append((f"{task_dir.name} {ckpt.parents[1].name}", ckpt, stores[0]))
    if not models:
        raise BenchmarkError(f"{bench_dir} holds no <task>/demos_*.zarr with <task>/<model>/checkpoints/latest.ckpt")
    return models


def markdown(payload: dict[str, Any]) -> str:
    """The report: one row per model, frame subset and predictor; RMSE / sd / R^2 per target dimension."""
    key, start, stop = payload["target"]
    dims = f"{key}[{start}:{'' if stop is None else stop}]"
    lines = [
        f"Linear probe (ridge {RIDGE}, leave one demo episode out) of each policy's eval-mode image features against "
        f"`{dims}`, beside the low-dim observations alone; {cpu_caption(payload['machine'])}.",
        "",
        "| model | frames of each episode | predictor | RMSE per dim | target sd per dim | R^2 per dim | mean R^2 |",
        "|---|---|---|---|---|---|---:|",
    ]
    for m in payload["models"]:
        for s in m["probes"]:
            rmse, sd, r2 = (
                ", ".join(f"{v:{f}}" for v in s[k]) for k, f in (("rmse", ".4f"), ("sd", ".4f"), ("r2", ".2f"))
            )
            lines.append(
                f"| {m['name']} | {s['frames']} ({s['n_frames']} frames, {m['episodes']} episodes) | {s['predictor']} "
                f"| {rmse} | {sd} | {r2} | {_r2(s['mean_r2'])} |"
            )
    lines += [
        "",
        f"Mean R^2 over the target dimensions whose sd is at least {VARYING:.0%} of the largest (1 = located exactly, "
        "0 = no better than the mean). The first frames of an episode are the test: the hand has not moved yet, so "
        "only the image can say where the object is.",
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    return "\n".join(lines)


def _r2(value: float | None) -> str:
    """A mean R^2 cell ('-' when no dimension varies)."""
    return "-" if value is None else f"{value:.2f}"


def run_probe(args: argparse.Namespace, argv: Sequence[str], progress: bool = True) -> dict[str, Any]:
    """Probe every model; write <name>.{json,md} into --out."""
    models = [tuple(m) for m in args.model or []]
    if args.bench_dir is not None:
        models += bench_dir_models(args.bench_dir)
    start = time.perf_counter()
    results = [
        probe_model(name, Path(ckpt), Path(store), args.target, args.early)
        for name, ckpt, store in tqdm(models, desc="probe", unit="model", disable=not progress)
    ]
    payload = {
        "command": "python benchmarks/probe_features.py " + " ".join(argv),
        "machine": machine_info(),
        "target": list(args.target),
        "ridge": RIDGE,
        "wall_s": time.perf_counter() - start,
        "models": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", payload)
    write_text_atomic(args.out / f"{args.name}.md", markdown(payload), mode=0o644)
    return payload


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", nargs=3, action="append", metavar=("NAME", "CHECKPOINT", "STORE"), help="a model (repeatable)"
    )
    parser.add_argument("--bench-dir", type=Path, default=None, help="every model of a bench_metaworld.py work dir")
    parser.add_argument("--target", type=parse_target, default=("state", 4, 7), help="KEY or KEY:START:STOP to locate")
    parser.add_argument(
        "--early",
        type=int,
        default=10,
        help="also probe each episode's first EARLY frames alone (before the hand moves)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the encoders")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where <name>.{json,md} go")
    parser.add_argument("--name", default="probe_features", help="results file name")
    args = parser.parse_args(argv)
    if not args.model and args.bench_dir is None:
        parser.error("give --model NAME CHECKPOINT STORE (repeatable) or --bench-dir DIR")
    if args.early < 1:
        parser.error(f"--early {args.early} must be >= 1")
    if args.bench_dir is not None and not args.bench_dir.is_dir():
        parser.error(f"--bench-dir {args.bench_dir} is not a directory")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the probe and print its table."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        run_probe(args, argv)
    except BenchmarkError as exc:
        sys.exit(f"probe_features.py: error: {exc}")
    print((args.out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
