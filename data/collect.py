"""Collect scripted-expert demonstrations into a zarr ``ReplayBuffer`` (resumable, optionally parallel).

    python -m data.collect task=push_around n_episodes=200 n_workers=2

Episode ``i`` runs the env with seed ``seed + i`` and the expert with its own generator derived from
that seed, so every episode is reproducible on its own. An episode ends at the expert's first success
(or at ``max_episode_steps``), or ``task.expert.steps_after_success`` steps later, so that the demos also show
the expert refining past the success threshold; successful episodes are appended atomically with ``meta/seed``,
``meta/mode``, ``meta/success``, ``meta/instruction`` (the expert's mode's instruction, e.g. "put the cube in the
left bin"; MetaWorld: the task's) and ``meta/task`` (the task name, so merged multi-task stores keep it).
``n_episodes`` is the total the store should hold: rerunning a command after an interrupt reopens the store,
skips the seeds it already holds and continues (a store collected before instructions keeps its meta keys).

A run holds the store's writer lock from opening it to the end, so two runs on one store take turns:
the second waits (up to ``lock_timeout`` seconds) for the first to finish and then continues from what
the store holds, exactly as if it had been started afterwards. Bad input exits with one line.
"""

from __future__ import annotations

import multiprocessing
import sys
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

from configs import unknown_option
from data.replay_buffer import ReplayBuffer, StoreExistsError
from envs import check_env_id
from envs.experts import make_expert


class EpisodeRunner:
    """One env and one expert that run seeded demonstration episodes."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: Mapping[str, Any],
        max_episode_steps: int,
        noise_std: float | None,
        steps_after_success: int = 0,
    ) -> None:
        check_env_id(env_id)
        self.steps_after_success = steps_after_success
        self.env = gymnasium.make(
            env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **dict(env_kwargs)
        )
        self.expert = make_expert(env_id, noise_std=noise_std)

    def run(self, seed: int) -> dict[str, Any]:
        """Run one episode: {"seed", "mode", "instruction", "success", "data": {key: (T, ...)}}, action (T, Da)."""
        obs, info = self.env.reset(seed=seed)
        self.expert.reset(self.env, np.random.default_rng([seed, 1]))
        space = self.env.action_space
        frames: dict[str, list[np.ndarray]] = {key: [] for key in [*obs, "action"]}
        success = bool(info["is_success"])
        after = 0  # steps recorded after the first success (the expert refining past the threshold)
        while not success or after < self.steps_after_success:
            after += success
            action = np.clip(self.expert.act(obs), space.low, space.high).astype(np.float32)  # (Da,)
            for key, value in obs.items():
                frames[key].append(value)
            frames["action"].append(action)
            obs, _, terminated, truncated, info = self.env.step(action)
            success = success or bool(info["is_success"])
            if terminated or truncated:
                break
        data = {key: np.stack(values) for key, values in frames.items() if values}
        return {
            "seed": seed,
            "mode": int(self.expert.mode),
            "instruction": self.expert.instruction,
            "success": success,
            "data": data,
        }

    def close(self) -> None:
        """Close the env (its renderers)."""
        self.env.close()


RENDER_ONLY_KWARGS = ("render_size", "render_mode")  # env kwargs that change videos, not observations
_worker_runner: EpisodeRunner | None = None


def _init_worker(
    env_id: str, env_kwargs: dict[str, Any], max_episode_steps: int, noise_std: float | None, steps_after_success: int
) -> None:
    """Pool initializer: each worker process builds its own env (and, lazily, its own GL context)."""
    global _worker_runner
    _worker_runner = EpisodeRunner(env_id, env_kwargs, max_episode_steps, noise_std, steps_after_success)


def _run_in_worker(seed: int) -> dict[str, Any]:
    """Run one episode with this worker's runner."""
    if _worker_runner is None:
        raise RuntimeError("_init_worker did not run in this worker process")
    return _worker_runner.run(seed)


def _open_store(out: Path, attrs: dict[str, Any], lock_timeout: float | None) -> ReplayBuffer:
    """Open ``out`` for appending (checking it holds the same task), or create it; waits for another writer."""
    if not out.exists():
        try:
            return ReplayBuffer.create(out, attrs=attrs)
        except StoreExistsError:
            pass  # another run created it a moment ago: append to it once that run lets go
    buffer = ReplayBuffer.open(
        out,
        mode="a",
        lock_timeout=lock_timeout,
        on_wait=lambda pid: print(f"{out} is being written by PID {pid}; waiting for it to finish", flush=True),
    )
    try:
        _check_store_fits(buffer, out, attrs)
    except BaseException:
        buffer.close()
        raise
    return buffer


def _check_store_fits(buffer: ReplayBuffer, out: Path, attrs: dict[str, Any]) -> None:
    """ValueError unless the store at ``out`` holds this task's episodes (or none yet)."""
    for key in ("task", "fps", "obs_keys", "env_kwargs"):
        if key in buffer.attrs and buffer.attrs[key] != attrs[key]:
            raise ValueError(
                f"{out} holds {key}={buffer.attrs[key]!r}, this run has {attrs[key]!r}; choose another `out`"
            )
    if buffer.n_episodes and "seed" not in buffer.meta_keys():
        raise ValueError(f"{out} has episodes without meta/seed (not written by data.collect); choose another `out`")


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
    lock_timeout: float | None = 3600.0,
) -> dict[str, Any]:
    """Fill the store at ``out`` up to ``n_episodes`` expert episodes of a task config; return a summary dict.

    ``lock_timeout``: seconds to wait for another process writing the store (None: as long as it runs).
    """
    for name, value in (
        ("n_episodes", n_episodes),
        ("n_workers", n_workers),
        ("max_attempts", 1 if max_attempts is None else max_attempts),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")
    max_attempts = 2 * n_episodes + 20 if max_attempts is None else max_attempts
    if lock_timeout is not None and not lock_timeout >= 0:
        raise ValueError(f"lock_timeout={lock_timeout!r} must be >= 0 seconds (or null to wait as long as it takes)")
    noise = task_cfg["expert"]["noise_std"] if noise_std is None else noise_std
    after = int(task_cfg["expert"].get("steps_after_success", 0))
    if after < 0:
        raise ValueError(f"task.expert.steps_after_success={after} must be >= 0")
    runner_args = (task_cfg["env_id"], dict(task_cfg["env_kwargs"]), int(task_cfg["max_episode_steps"]), noise, after)

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
    pool, buffer = None, None
    try:
        out = Path(out)
        buffer = _open_store(out, attrs, lock_timeout)
        buffer.set_attrs(**attrs)
        taken = set(buffer.episode_meta("seed").tolist()) if "seed" in buffer.meta_keys() else set()
        old_keys = set(buffer.meta_keys())
        legacy_meta = old_keys if buffer.n_episodes and "instruction" not in old_keys else set()
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
                        meta = {
                            "seed": result["seed"],
                            "mode": result["mode"],
                            "success": int(result["success"]),
                            "instruction": result["instruction"],
                            "task": task_cfg["name"],
                        }
                        if legacy_meta:  # a store collected before instructions: keep its meta keys
                            meta = {k: v for k, v in meta.items() if k in legacy_meta}
                        buffer.add_episode(result["data"], meta)
                        bar.update(1)
                    if buffer.n_episodes >= n_episodes:
                        break
        stored_modes = Counter(buffer.episode_meta("mode").tolist()) if buffer.n_episodes else Counter()
        episodes, steps = buffer.n_episodes, buffer.n_steps
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        runner.close()
        if buffer is not None:
            buffer.close()
    return {
        "task": task_cfg["name"],
        "out": str(out),
        "episodes": episodes,
        "new_episodes": episodes - existing,
        "steps": steps,
        "attempts": attempts,
        "expert_success_rate": successes / attempts if attempts else float("nan"),
        "mode_counts": {name: stored_modes.get(i, 0) for i, name in enumerate(mode_names)},
        "tried_mode_counts": {name: tried_modes.get(i, 0) for i, name in enumerate(mode_names)},
        "wall_time_s": time.perf_counter() - start,
        "complete": episodes >= n_episodes,
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
    """Hydra entry point (configs/collect.yaml): collect, then print the summary table; bad input exits in one line."""
    try:
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
            lock_timeout=cfg.lock_timeout,
        )
    except (ValueError, FileNotFoundError, gymnasium.error.Error) as exc:  # bad counts, task, store or env id
        sys.exit(f"data.collect: error: {exc}")
    print(format_summary(summary))


def cli() -> None:
    """``python -m data.collect`` and the ``actchunk-collect`` command: unknown options are named before hydra runs."""
    problem = unknown_option(sys.argv[1:], "collect")
    if problem is not None:
        sys.exit(f"data.collect: error: {problem}")
    main()


if __name__ == "__main__":
    cli()
