"""Collect scripted-expert demonstrations into a zarr ``ReplayBuffer`` (resumable, optionally parallel).

    python -m data.collect task=push_around n_episodes=200 n_workers=2

Episode ``i`` runs the env with seed ``seed + i`` and the expert with its own generator derived from
that seed, so every episode is reproducible on its own. An episode ends at the expert's first success
(or at ``max_episode_steps``); successful episodes are appended atomically with ``meta/seed``,
``meta/mode`` and ``meta/success``. ``n_episodes`` is the total the store should hold: rerunning a
command after an interrupt reopens the store, skips the seeds it already holds and continues.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium
import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data.replay_buffer import ReplayBuffer
from envs import check_env_id
from envs.experts import make_expert


class EpisodeRunner:
    """One env and one expert that run seeded demonstration episodes."""

    def __init__(
        self, env_id: str, env_kwargs: Mapping[str, Any], max_episode_steps: int, noise_std: float | None
    ) -> None:
        check_env_id(env_id)
        self.env = gymnasium.make(
            env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **dict(env_kwargs)
        )
        self.expert = make_expert(env_id, noise_std=noise_std)

    def run(self, seed: int) -> dict[str, Any]:
        """Run one episode; return {"seed", "mode", "success", "data": {key: (T, ...)}} with data["action"] (T, Da)."""
        obs, info = self.env.reset(seed=seed)
        self.expert.reset(self.env, np.random.default_rng([seed, 1]))
        space = self.env.action_space
        frames: dict[str, list[np.ndarray]] = {key: [] for key in [*obs, "action"]}
        success = bool(info["is_success"])
        while not success:
            action = np.clip(self.expert.act(obs), space.low, space.high).astype(np.float32)  # (Da,)
            for key, value in obs.items():
                frames[key].append(value)
            frames["action"].append(action)
            obs, _, terminated, truncated, info = self.env.step(action)
            success = bool(info["is_success"])
            if terminated or truncated:
                break
        data = {key: np.stack(values) for key, values in frames.items() if values}
        return {"seed": seed, "mode": int(self.expert.mode), "success": success, "data": data}

    def close(self) -> None:
        """Close the env (its renderers)."""
        self.env.close()


RENDER_ONLY_KWARGS = ("render_size", "render_mode")  # env kwargs that change videos, not observations
_worker_runner: EpisodeRunner | None = None


def _init_worker(env_id: str, env_kwargs: dict[str, Any], max_episode_steps: int, noise_std: float | None) -> None:
    """Pool initializer: each worker process builds its own env (and, lazily, its own GL context)."""
    global _worker_runner
    _worker_runner = EpisodeRunner(env_id, env_kwargs, max_episode_steps, noise_std)


def _run_in_worker(seed: int) -> dict[str, Any]:
    """Run one episode with this worker's runner."""
    if _worker_runner is None:
        raise RuntimeError("_init_worker did not run in this worker process")
    return _worker_runner.run(seed)


def _open_store(out: Path, attrs: dict[str, Any]) -> ReplayBuffer:
    """Open ``out`` for appending (checking it holds the same task) or create it."""
    if not out.exists():
        return ReplayBuffer.create(out, attrs=attrs)
    buffer = ReplayBuffer.open(out, mode="a")
    for key in ("task", "fps", "obs_keys", "env_kwargs"):
        if key in buffer.attrs and buffer.attrs[key] != attrs[key]:
            raise ValueError(
                f"{out} holds {key}={buffer.attrs[key]!r}, this run has {attrs[key]!r}; choose another `out`"
            )
    if buffer.n_episodes and "seed" not in buffer.meta_keys():
        raise ValueError(f"{out} has episodes without meta/seed (not written by data.collect); choose another `out`")
    return buffer


def observation_env_kwargs(env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The env kwargs that shape the stored observations (all but the video-only render settings)."""
    return {k: v for k, v in sorted(env_kwargs.items()) if k not in RENDER_ONLY_KWARGS}


def _candidate_seeds(base_seed: int, taken: set[int]) -> Iterator[int]:
    """Episode seeds base_seed, base_seed + 1, ... that the store does not hold yet."""
    seed = base_seed
    while True:
        if seed not in taken:
            yield seed
        seed += 1


def collect(
    task_cfg: Mapping[str, Any],
    n_episodes: int,
    out: str | Path,
    seed: int = 0,
    n_workers: int = 1,
    noise_std: float | None = None,
    keep_failed: bool = False,
    max_attempts: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fill the store at ``out`` up to ``n_episodes`` expert episodes of a task config; return a summary dict."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes} must be >= 1")
    if n_workers < 1:
        raise ValueError(f"n_workers={n_workers} must be >= 1")
    max_attempts = 2 * n_episodes + 20 if max_attempts is None else max_attempts
    if max_attempts < 1:
        raise ValueError(f"max_attempts={max_attempts} must be >= 1 (or None for 2 * n_episodes + 20)")
    noise = task_cfg["expert"]["noise_std"] if noise_std is None else noise_std
    runner_args = (task_cfg["env_id"], dict(task_cfg["env_kwargs"]), int(task_cfg["max_episode_steps"]), noise)

    start = time.perf_counter()
    runner = EpisodeRunner(*runner_args)
    mode_names = list(runner.expert.mode_names)
    attrs = {
        "task": task_cfg["name"],
        "fps": task_cfg["fps"],
        "obs_keys": sorted(runner.env.observation_space.spaces),
        "mode_names": mode_names,
        "env_kwargs": observation_env_kwargs(task_cfg["env_kwargs"]),
    }
    pool = None
    try:
        out = Path(out)
        buffer = _open_store(out, attrs)
        buffer.set_attrs(**attrs)
        taken = set(buffer.episode_meta("seed").tolist()) if "seed" in buffer.meta_keys() else set()
        seeds = _candidate_seeds(seed, taken)
        existing, attempts, successes = buffer.n_episodes, 0, 0
        tried_modes: Counter[int] = Counter()
        if n_workers > 1:
            pool = multiprocessing.get_context("spawn").Pool(n_workers, initializer=_init_worker, initargs=runner_args)
        with tqdm(
            total=n_episodes,
            initial=min(existing, n_episodes),
            desc=f"collect {task_cfg['name']}",
            unit="ep",
            disable=not progress,
        ) as bar:
            while buffer.n_episodes < n_episodes and attempts < max_attempts:
                batch_size = min(max_attempts - attempts, max(n_workers, n_episodes - buffer.n_episodes))
                batch = [next(seeds) for _ in range(batch_size)]
                results = pool.imap(_run_in_worker, batch) if pool is not None else map(runner.run, batch)
                for result in results:
                    attempts += 1
                    successes += result["success"]
                    tried_modes[result["mode"]] += 1
                    if result["success"] or keep_failed:
                        meta = {"seed": result["seed"], "mode": result["mode"], "success": int(result["success"])}
                        buffer.add_episode(result["data"], meta)
                        bar.update(1)
                    if buffer.n_episodes >= n_episodes:
                        break
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        runner.close()

    stored_modes = Counter(buffer.episode_meta("mode").tolist()) if buffer.n_episodes else Counter()
    return {
        "task": task_cfg["name"],
        "out": str(out),
        "episodes": buffer.n_episodes,
        "new_episodes": buffer.n_episodes - existing,
        "steps": buffer.n_steps,
        "attempts": attempts,
        "expert_success_rate": successes / attempts if attempts else float("nan"),
        "mode_counts": {name: stored_modes.get(i, 0) for i, name in enumerate(mode_names)},
        "tried_mode_counts": {name: tried_modes.get(i, 0) for i, name in enumerate(mode_names)},
        "wall_time_s": time.perf_counter() - start,
        "complete": buffer.n_episodes >= n_episodes,
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """Render a collect() summary as a small text table."""
    rate = summary["expert_success_rate"]
    rows = [
        ("store", summary["out"]),
        ("episodes", f"{summary['episodes']} ({summary['new_episodes']:+d} this run)"),
        ("steps", str(summary["steps"])),
        ("expert success", f"{rate:.1%} of {summary['attempts']} tried" if summary["attempts"] else "none tried"),
        ("modes stored", " | ".join(f"{k} {v}" for k, v in summary["mode_counts"].items())),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
    ]
    if not summary["complete"]:
        rows.append(("WARNING", "max_attempts reached before n_episodes; rerun to continue"))
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"collect {summary['task']}"] + [f"  {name:<{width}}  {value}" for name, value in rows])


@hydra.main(version_base=None, config_path="../configs", config_name="collect")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (configs/collect.yaml): collect, then print the summary table."""
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    summary = collect(
        task_cfg,
        cfg.n_episodes,
        cfg.out,
        seed=cfg.seed,
        n_workers=cfg.n_workers,
        noise_std=cfg.noise_std,
        keep_failed=cfg.keep_failed,
        max_attempts=cfg.max_attempts,
    )
    print(format_summary(summary))


if __name__ == "__main__":
    main()
