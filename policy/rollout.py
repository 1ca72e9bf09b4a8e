"""Run seeded episodes through a gymnasium vector env with a RecedingHorizonController.

Each env slot takes the next seed as soon as its episode ends (terminated or truncated): the vector env
runs with autoreset disabled and only that slot is reset, with ``options={"reset_mask": ...}``. Once
the seeds run out, finished slots idle (reset, stepped with a held action, results ignored) until the
last episode ends. An episode succeeds if ``info["is_success"]`` was true at any step.

Env errors do not stop an evaluation: every env is wrapped in ``policy.env_errors.ReportEnvErrors``,
which turns an exception from ``reset``/``step`` into an ended episode whose info carries the error text,
so it is recorded as a failure of the episode's seed. If the vector env itself fails (for example a
worker process dies), the episodes of dead workers (all in-flight ones if none can be told apart) are
recorded as failed with the error, the vector env is rebuilt from the factory, and the other in-flight
episodes are re-run from their seeds.

Videos: frames of ``render()`` for the first ``n_videos`` episodes, written as MP4 at ``fps`` to
``episode_<i>_seed<seed>_<success|failure>.mp4`` (temp file + rename).
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import imageio.v2 as imageio
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from tqdm import tqdm

from data.atomic import atomic_path
from policy.controller import RecedingHorizonController
from policy.env_errors import describe, make_reporting_env

# Mesa/NVIDIA GL drivers the first GL context maps into a process; a process holding one must not fork
# env workers (a forked EGL context hangs the child).
_GL_DRIVER = re.compile(r"_dri\.so|libgallium|libOSMesa|libEGL_nvidia|libnvidia-glcore")


def worker_start_method() -> str | None:
    """ "fork" for env workers (far faster to start than forkserver) unless this process has loaded a GL driver.

    Envs create renderers lazily, so eval.py's parent process never holds a GL context and forks; a
    process that has rendered (a notebook, a test session, in-process demo collection) gets
    "forkserver", whose server process never renders. Workers never call into torch, whose thread
    pools do not survive a fork. None (the platform default) where fork or /proc is unavailable.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        return None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return "forkserver" if _GL_DRIVER.search(maps) else "fork"


def make_vector_env(make_env: Callable[[], gymnasium.Env], n_envs: int, asynchronous: bool | None = None) -> VectorEnv:
    """n_envs copies of make_env() in ReportEnvErrors, no autoreset; async (default: if n_envs > 1) or in-process."""
    fns = [functools.partial(make_reporting_env, make_env)] * n_envs
    if n_envs > 1 if asynchronous is None else asynchronous:
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED, context=worker_start_method())
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)


def write_video(frames: Sequence[np.ndarray], path: Path, fps: int) -> None:
    """Write (H, W, 3) uint8 frames as an MP4 at path atomically (temp file + rename)."""
    with atomic_path(path) as tmp, imageio.get_writer(tmp, fps=fps, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(frame)


class _Episode:
    """What is known about one in-flight episode."""

    def __init__(self, index: int, seed: int, record: bool) -> None:
        self.index = index
        self.seed = seed
        self.success = False
        self.rewards: list[float] = []
        self.outcome: str | None = None  # the env's last reported "outcome" info (e.g. PickPlace's bin)
        self.frames: list[np.ndarray] | None = [] if record else None

    def result(self, error: str | None) -> dict[str, Any]:
        """The episode record: seed, success, max/final reward, length, error (video is set when one is written)."""
        return {
            "episode": self.index,
            "seed": self.seed,
            "success": self.success and error is None,
            "max_reward": max(self.rewards, default=0.0),
            "final_reward": self.rewards[-1] if self.rewards else 0.0,
            "length": len(self.rewards),
            "error": error,
            "outcome": self.outcome,
            "video": None,
        }


def run_episodes(
    make_env: Callable[[], gymnasium.Env],
    controller: RecedingHorizonController,
    seeds: Sequence[int],
    *,
    video_dir: str | Path | None = None,
    n_videos: int = 0,
    fps: int = 10,
    progress: bool = True,
    asynchronous: bool | None = None,
) -> list[dict[str, Any]]:
    """Roll out one episode per seed on controller.n_envs envs; returns the episode records in episode order."""
    if len(seeds) == 0:
        raise ValueError("seeds is empty; pass at least one episode seed")
    if n_videos > 0 and video_dir is None:
        raise ValueError("n_videos > 0 needs a video_dir to write the MP4 files to")
    n_envs = controller.n_envs
    video_dir = None if video_dir is None else Path(video_dir)
    if video_dir is not None and n_videos > 0:
        video_dir.mkdir(parents=True, exist_ok=True)
    pending = list(range(len(seeds)))  # episode indices not started yet, in order
    results: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(seeds), desc="episodes", disable=not progress, leave=False)

    def finish(episode: _Episode, error: str | None) -> None:
        results[episode.index] = episode.result(error)
        if episode.frames:
            outcome = "success" if results[episode.index]["success"] else "failure"
            name = f"episode_{episode.index}_seed{episode.seed}_{outcome}.mp4"
            write_video(episode.frames, video_dir / name, fps)
            results[episode.index]["video"] = str(video_dir / name)
        bar.update(1)

    while pending:
        vec = make_vector_env(make_env, n_envs, asynchronous)
        crash = None
        try:
            crash = _run_until_done_or_crash(vec, controller, seeds, pending, finish, n_videos)
        finally:
            if crash is not None and isinstance(vec, AsyncVectorEnv):
                _kill_workers(vec)
            else:
                vec.close()
        if crash is not None:
            error, failed, in_flight = crash
            for episode in failed:
                finish(episode, error)
            pending[:0] = sorted(e.index for e in in_flight)  # re-run from their seeds on a fresh vector env
    bar.close()
    return [results[i] for i in range(len(seeds))]


def _run_until_done_or_crash(
    vec: VectorEnv,
    controller: RecedingHorizonController,
    seeds: Sequence[int],
    pending: list[int],
    finish: Callable[[_Episode, str | None], None],
    n_videos: int,
) -> tuple[str, list[_Episode], list[_Episode]] | None:
    """Run until pending is empty and every slot is idle; on a vector-env failure return (error, failed, re-run)."""
    n_envs = vec.num_envs
    slots: list[_Episode | None] = [None] * n_envs
    slot_seeds = [seeds[pending[0]]] * n_envs  # idle slots keep resetting to a valid seed

    def start(mask: np.ndarray) -> None:
        for i in np.flatnonzero(mask):
            if pending:
                index = pending.pop(0)
                slots[i] = _Episode(index, seeds[index], record=index < n_videos)
                slot_seeds[i] = seeds[index]
            else:
                slots[i] = None

    try:
        start(np.ones(n_envs, dtype=bool))
        obs, info = _guard(vec.reset, seed=list(slot_seeds))
        controller.reset()
        _record_frames(vec, slots, np.ones(n_envs, dtype=bool))
        while True:
            ended = _reset_errors(info, slots, finish)
            if ended.any():  # an env that failed to reset: its slot takes the next seed
                start(ended)
                obs, info = _reset_slots(vec, ended, slot_seeds, slots, controller)
                continue
            active = np.array([s is not None for s in slots])
            if not active.any():
                return None
            actions = controller.act(obs, active)  # (n_envs, Da)
            obs, reward, terminated, truncated, info = _guard(vec.step, actions)
            _record_frames(vec, slots, active)
            done = terminated | truncated
            for i, episode in enumerate(slots):
                if episode is None:
                    continue
                episode.rewards.append(float(reward[i]))
                episode.success |= bool(_info_at(info, "is_success", i))
                outcome = _info_at(info, "outcome", i)
                episode.outcome = episode.outcome if outcome is None else str(outcome)
                if done[i]:
                    finish(episode, _info_at(info, "error", i))
                    slots[i] = None
            info = {}
            if done.any():
                start(done)
                obs, info = _reset_slots(vec, done, slot_seeds, slots, controller)
    except VectorEnvFailure as failure:
        in_flight = [s for s in slots if s is not None]
        dead = _dead_workers(vec)
        failed = [s for i, s in enumerate(slots) if s is not None and i in dead] or in_flight
        return describe(failure.__cause__), failed, [s for s in in_flight if s not in failed]


class VectorEnvFailure(RuntimeError):
    """The vector env as a whole raised (e.g. a worker process died); the cause is the original exception."""


def _guard(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a vector env method; re-raise its exceptions as VectorEnvFailure so policy errors are never mistaken."""
    try:
        return method(*args, **kwargs)
    except Exception as exc:
        raise VectorEnvFailure(describe(exc)) from exc


def _info_at(info: dict[str, Any], key: str, i: int) -> Any:
    """info[key][i] of a vector env's info dict if env i reported it, else None."""
    if key in info and info.get(f"_{key}", np.ones(len(info[key]), dtype=bool))[i]:
        return info[key][i]
    return None


def _reset_errors(info: dict[str, Any], slots: list[_Episode | None], finish: Callable) -> np.ndarray:
    """Finish (as failed) the episodes whose reset raised; returns the mask of those slots."""
    ended = np.zeros(len(slots), dtype=bool)
    for i, episode in enumerate(slots):
        error = _info_at(info, "error", i)
        if episode is not None and error is not None:
            finish(episode, error)
            slots[i] = None
            ended[i] = True
    return ended


def _reset_slots(
    vec: VectorEnv,
    mask: np.ndarray,
    seeds: list[int],
    slots: list[_Episode | None],
    controller: RecedingHorizonController,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reset the masked slots with their seeds (the others keep their state); returns all observations and info."""
    obs, info = _guard(vec.reset, seed=list(seeds), options={"reset_mask": mask.copy()})
    controller.reset(mask)
    _record_frames(vec, slots, mask)
    return obs, info


def _record_frames(vec: VectorEnv, slots: list[_Episode | None], mask: np.ndarray) -> None:
    """Append the current render() frame of the masked slots whose episode is being recorded."""
    recording = [i for i, s in enumerate(slots) if mask[i] and s is not None and s.frames is not None]
    if recording:
        frames = _guard(vec.call, "render")  # vector envs call a method on every env
        for i in recording:
            slots[i].frames.append(frames[i])


def _kill_workers(vec: AsyncVectorEnv) -> None:
    """Close a failed async vector env: its close() would wait on a dead worker's pipe, so end the workers directly."""
    for process in vec.processes:
        if process.is_alive():
            process.terminate()
        process.join()
    for pipe in vec.parent_pipes:
        if pipe is not None:
            pipe.close()
    vec.closed = True


def _dead_workers(vec: VectorEnv, timeout: float = 2.0) -> set[int]:
    """Indices of async workers whose process has exited (waits up to timeout s: a pipe closes before its process)."""
    processes = getattr(vec, "processes", [])
    exited = multiprocessing.connection.wait([p.sentinel for p in processes], timeout=timeout) if processes else []
    return {i for i, process in enumerate(processes) if process.sentinel in exited}
