"""Which differences between a run's stored config and a new one resuming it are safe.

A resumed run must continue the same model on the same data: a change to the policy, objective,
sampler, task, observations, data split, optimizer, EMA or seed would silently train (and label) something
else under the old run's name, so resuming refuses it and names the keys. Only run control may change:

- ``training.max_steps``: a longer or shorter run (the cosine schedule follows the new length)
- ``training.log_every``, ``training.val_every``, ``training.val_batches``, ``training.checkpoint_every``
- every ``rollout.*`` setting (periodic evaluation only)
- ``device``, ``amp``, ``dataset.num_workers``, ``dataset.collect_workers`` (where and how fast, not what)
- ``distributed.*`` (the collective timeout and the recorded world size; the training loop itself refuses to
  resume a checkpoint with another number of processes, since it holds each process's random state)
- ``resume``, ``output_root``, ``name`` (how the run directory was found)

A key present on one side only counts as a change, so a config from an older actchunk that lacks a key
is refused too rather than guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SAFE_TO_CHANGE = (
    "training.max_steps",
    "training.log_every",
    "training.val_every",
    "training.val_batches",
    "training.checkpoint_every",
    "rollout",
    "device",
    "amp",
    "dataset.num_workers",
    "dataset.collect_workers",
    "distributed",
    "resume",
    "output_root",
    "name",
)
_ABSENT = "(absent)"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _is_safe(key: str) -> bool:
    """Whether ``key`` is, or lies under, an entry of SAFE_TO_CHANGE."""
    return any(key == safe or key.startswith(f"{safe}.") for safe in SAFE_TO_CHANGE)


def unsafe_changes(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every differing key that resuming must not change, sorted by key."""
    old_flat, new_flat = flatten(stored), flatten(new)
    changes = []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key, _ABSENT), new_flat.get(key, _ABSENT)
        if old != value and not _is_safe(key):
            changes.append(f"{key}: {old!r} -> {value!r}")
    return changes
