"""Samples/second delivered to a training loop: our batched loader vs per-sample loaders.

Shape (issue #2): batch 64, horizon 16, n_obs_steps 2, 96x96x3 uint8 image + 2-d state +
2-d action, 200 episodes x 150 steps, in a zarr store written by ``ReplayBuffer``.

Loaders compared on the same store:
- ``ours``: ``SequenceDataset`` over the store loaded into memory, ``__getitems__`` batches
  through ``make_dataloader`` (workers=0 and workers=2).
- ``per-sample (memory)``: the same in-memory arrays, one ``__getitem__`` per sample and
  torch's ``default_collate`` (the pattern of Diffusion Policy's loader).
- ``per-sample (zarr)``: one ``__getitem__`` per sample reading the window from the zarr store
  on disk, then ``default_collate`` (the naive loader).

Run: ``python benchmarks/bench_data.py [--episodes 200] [--batches 30] [--repeats 5]``.
Prints a table (median samples/s over repeats and the ratio to ours) and writes
``benchmarks/results/bench_data.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from data.dataset import SequenceDataset, make_dataloader
from data.replay_buffer import ReplayBuffer
from results_io import RESULTS_DIR, write_json

HORIZON, N_OBS, N_ACT, BATCH = 16, 2, 8, 64


def synthetic_episode(rng: np.random.Generator, t: int, size: int = 96) -> dict[str, np.ndarray]:
    """A rendered-looking episode: a disc moving over a textured background (compresses like real frames)."""
    yy, xx = np.mgrid[0:size, 0:size]
    background = (40 + 20 * np.sin(xx / 7.0) * np.cos(yy / 11.0)).astype(np.uint8)
    path = np.cumsum(rng.normal(0, 1.5, size=(t, 2)), axis=0) + size / 2
    path = np.clip(path, 10, size - 10)
    frames = np.repeat(background[None, :, :, None], 3, axis=-1).repeat(t, axis=0)
    disc = (xx[None] - path[:, 0, None, None]) ** 2 + (yy[None] - path[:, 1, None, None]) ** 2 < 64
    frames[disc] = (200, 80, 60)
    state = (path / size).astype(np.float32)
    action = np.roll(state, -1, axis=0) + rng.normal(0, 0.01, size=(t, 2)).astype(np.float32)
    return {"image": frames, "state": state, "action": action}


def build_store(path: Path, n_episodes: int, length: int) -> ReplayBuffer:
    """Write the benchmark store with our ReplayBuffer."""
    rng = np.random.default_rng(0)
    buf = ReplayBuffer.create(path, attrs={"task": "bench"}, overwrite=True)
    for _ in range(n_episodes):
        buf.add_episode(synthetic_episode(rng, length))
    return buf


class PerSampleDataset(Dataset):
    """Naive loader: one window per ``__getitem__``, edge-padded by Python indexing."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer
        ends = buffer.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        self.windows = [
            (s, e, r)
            for s, e in zip(starts, ends, strict=True)
            for r in range(-(N_OBS - 1), int(e - s) - HORIZON + N_ACT)
        ]
        self.arrays = {k: buffer.array(k) for k in ("image", "state", "action")}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start, end, rel = self.windows[i]
        lo, hi = max(start + rel, start), min(start + rel + HORIZON, end)
        out = {}
        for key, arr in self.arrays.items():
            chunk = np.asarray(arr[lo:hi])
            pad_before, pad_after = lo - (start + rel), (start + rel + HORIZON) - hi
            chunk = np.concatenate([chunk[:1]] * pad_before + [chunk] + [chunk[-1:]] * pad_after)
            out[key] = torch.from_numpy(chunk if key == "action" else chunk[:N_OBS].copy())
        return out


def measure(loader: DataLoader, n_batches: int, repeats: int) -> list[float]:
    """Samples/s for ``repeats`` runs of ``n_batches`` batches (after one warm-up batch)."""
    rates = []
    it = iter(loader)
    next(it)
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = 0
        for _ in range(n_batches):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            n += batch["action"].shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> None:
    """Build the store, measure each loader, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=200, help="episodes in the store")
    parser.add_argument("--length", type=int, default=150, help="steps per episode")
    parser.add_argument("--batches", type=int, default=30, help="batches per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "bench_data.json"), help="JSON output")
    args = parser.parse_args()
    torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        build_store(store, args.episodes, args.length)
        t_write = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
        t0 = time.perf_counter()
        mem = ReplayBuffer.open(store, in_memory=True)
        t_load = time.perf_counter() - t0
        disk = ReplayBuffer.open(store)

        kw = dict(horizon=HORIZON, n_obs_steps=N_OBS, n_action_steps=N_ACT, obs_keys=["image", "state"])
        ours = SequenceDataset(mem, **kw)
        loaders = {
            "ours (workers=0)": make_dataloader(ours, batch_size=BATCH, seed=0),
            "ours (workers=2)": make_dataloader(ours, batch_size=BATCH, seed=0, num_workers=2),
            "per-sample (memory)": DataLoader(
                PerSampleDataset(mem), batch_size=BATCH, shuffle=True, collate_fn=default_collate
            ),
            "per-sample (zarr)": DataLoader(
                PerSampleDataset(disk), batch_size=BATCH, shuffle=True, collate_fn=default_collate
            ),
        }
        results = {}
        for name, loader in loaders.items():
            slow = "zarr" in name
            rates = measure(loader, max(3, args.batches // 10) if slow else args.batches, 3 if slow else args.repeats)
            results[name] = statistics.median(rates)

    base = results["ours (workers=0)"]
    print(
        f"store: {args.episodes} episodes x {args.length} steps, 96x96x3 uint8 image + 2-d state + 2-d action; "
        f"{size_mb:.0f} MB on disk (zstd), written in {t_write:.1f} s, loaded into memory in {t_load:.1f} s"
    )
    print(f"batch {BATCH}, horizon {HORIZON}, n_obs_steps {N_OBS}; median of repeats\n")
    print(f"| {'loader':<22} | {'samples/s':>10} | {'ours(w=0) / this':>16} |")
    print(f"|{'-' * 24}|{'-' * 12}|{'-' * 18}|")
    for name, rate in results.items():
        print(f"| {name:<22} | {rate:>10.0f} | {base / rate:>15.1f}x |")
    record = {
        "episodes": args.episodes,
        "length": args.length,
        "batch": BATCH,
        "horizon": HORIZON,
        "n_obs_steps": N_OBS,
        "store_mb": size_mb,
        "write_s": t_write,
        "load_s": t_load,
        "samples_per_s": results,
        "ratio_ours_w0_over": {k: base / v for k, v in results.items()},
    }
    print(f"\nwrote {write_json(args.out, record)}")


if __name__ == "__main__":
    main()
