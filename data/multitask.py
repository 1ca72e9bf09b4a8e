"""Multi-task stores: several tasks' demonstration stores merged into one, each episode keeping its task.

    merge_stores([reach.zarr, push.zarr, ...], "multi.zarr")

Every source must come from ``data.collect`` (``meta/task`` and ``meta/instruction`` per episode) and share the
observation keys, control rate and observation env settings, so one policy can train on all of them; the merged
store's attrs name the tasks (``tasks``). It is built beside ``out`` and renamed into place when complete.
``task_instructions`` reads back which instruction each task's episodes carry (eval's per-task instructions).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data.replay_buffer import ReplayBuffer

SHARED_ATTRS = ("fps", "obs_keys", "env_kwargs")  # what every merged source must agree on


def task_instructions(buffer: ReplayBuffer) -> dict[str, str]:
    """{task name: its episodes' instruction} of a store with meta/task and meta/instruction (first one per task)."""
    missing = [k for k in ("task", "instruction") if k not in buffer.meta_keys()]
    if missing:
        raise ValueError(
            f"store {buffer.path} lacks meta/{missing[0]}; re-collect it with python -m data.collect (it writes both)"
        )
    pairs: dict[str, str] = {}
    for task, text in zip(buffer.episode_meta("task"), buffer.episode_meta("instruction")):
        pairs.setdefault(str(task), str(text))
    return pairs


def merge_stores(sources: Sequence[str | Path], out: str | Path, name: str, progress: bool = True) -> dict[str, Any]:
    """Write every episode of ``sources`` (in order) into a new store ``out`` for task ``name``; returns a summary."""
    if len(sources) < 2:
        raise ValueError(f"merge_stores needs at least two source stores, got {len(sources)}")
    buffers = [ReplayBuffer.open(Path(p), "r") for p in sources]
    try:
        first = buffers[0]
        for buffer in buffers:
            task_instructions(buffer)  # refuses a source without meta/task or meta/instruction
            for key in SHARED_ATTRS:
                if buffer.attrs.get(key) != first.attrs.get(key):
                    raise ValueError(
                        f"store {buffer.path} has {key}={buffer.attrs.get(key)!r} but {first.path} has "
                        f"{first.attrs.get(key)!r}; merge stores of one observation setup"
                    )
        tasks = [str(b.attrs.get("task")) for b in buffers]
        attrs = {"task": name, "tasks": tasks, **{k: first.attrs.get(k) for k in SHARED_ATTRS}}
        keys = first.meta_keys()
        total = sum(b.n_episodes for b in buffers)
        with ReplayBuffer.building(Path(out), attrs=attrs) as merged:
            with tqdm(total=total, desc=f"merge {name}", unit="ep", disable=not progress) as bar:
                for buffer in buffers:
                    meta = {k: buffer.episode_meta(k) for k in keys}
                    for i in range(buffer.n_episodes):
                        merged.add_episode(buffer.get_episode(i), {k: meta[k][i : i + 1].tolist()[0] for k in keys})
                        bar.update(1)
    finally:
        for buffer in buffers:
            buffer.close()
    return {"out": str(out), "tasks": tasks, "episodes": total}


def subtask_config(task_cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """A multi-task config's (``tasks: {name: env_id}``) single-task config for ``name``, with its own store path."""
    tasks = task_cfg.get("tasks") or {}
    if name not in tasks:
        raise ValueError(f"task {name!r} is not one of this multi-task config's tasks {sorted(tasks)}")
    base = Path(task_cfg["dataset_path"])
    parts = base.with_name(f"{base.stem}_parts") / f"{name}.zarr"
    single = {k: v for k, v in task_cfg.items() if k != "tasks"}
    return {**single, "name": name, "env_id": tasks[name], "dataset_path": str(parts)}


def collect_multitask(
    task_cfg: dict[str, Any], n_per_task: int, seed: int = 0, n_workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Collect ``n_per_task`` expert episodes of each task of a multi-task config, then merge them at its path."""
    from data.collect import collect  # collect imports envs; merging stores alone does not need them

    paths = []
    for name in task_cfg["tasks"]:
        single = subtask_config(task_cfg, name)
        collect(single, n_per_task, single["dataset_path"], seed=seed, n_workers=n_workers, progress=progress)
        paths.append(single["dataset_path"])
    return merge_stores(paths, task_cfg["dataset_path"], task_cfg["name"], progress=progress)
