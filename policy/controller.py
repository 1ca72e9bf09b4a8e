"""Receding-horizon control of a ChunkPolicy, batched over the envs of a vector env.

The controller keeps the last ``n_obs_steps`` observations of every env (the first observation of an
episode repeated to fill the window), plans with ``policy.predict_action`` when an env's action queue
is empty and executes actions ``[n_obs_steps-1, n_obs_steps-1+n_action_steps)`` of the chunk (the
policy's "action" output), then replans. Envs that need a plan at the same step are batched into one
``predict_action`` call; an env with actions left keeps executing its queue.

With ``temporal_ensemble_k`` set (ACT's temporal ensembling) every env replans at every step, and the
executed action is the average over all chunks predicted in the last ``n_action_steps`` steps of the
action each of them holds for the current step, with weights ``exp(-k * i)``, ``i = 0`` the oldest.

Orchestration only: numpy in (observations), numpy out (actions); the policy does the maths.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class RecedingHorizonController:
    """Turns batched env observations into batched actions by executing and replanning action chunks."""

    def __init__(
        self,
        policy: Any,
        n_envs: int,
        *,
        sampler: Any = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        temporal_ensemble_k: float | None = None,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs={n_envs} must be >= 1")
        if temporal_ensemble_k is not None and not np.isfinite(temporal_ensemble_k):
            raise ValueError(f"temporal_ensemble_k={temporal_ensemble_k} must be a finite float or None")
        self.policy = policy
        self.n_envs = n_envs
        self.sampler = sampler
        self.num_steps = num_steps
        self.generator = generator
        self.temporal_ensemble_k = temporal_ensemble_k
        self.n_obs_steps = int(policy.n_obs_steps)
        self.n_action_steps = int(policy.n_action_steps)
        self.obs_keys = tuple(policy.obs_shapes)
        self.latencies: list[float] = []  # seconds per predict_action call
        self._history: dict[str, np.ndarray] = {}  # key -> (n_envs, n_obs_steps, ...)
        self._fresh = np.ones(n_envs, dtype=bool)  # env starts a new episode at its next observation
        self._queue: np.ndarray | None = None  # (n_envs, n_action_steps, Da) planned actions
        self._queue_pos = np.zeros(n_envs, dtype=np.int64)  # next queue index to execute per env
        self._chunks: np.ndarray | None = None  # (n_envs, n_action_steps, n_action_steps, Da), axis 1 = age
        self._n_chunks = np.zeros(n_envs, dtype=np.int64)  # chunks predicted since the env's reset (capped)
        self._last_action: np.ndarray | None = None  # (n_envs, Da)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Mark envs (all, or where ``mask`` (n_envs,) is True) as starting a new episode at their next act()."""
        mask = np.ones(self.n_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_envs,):
            raise ValueError(f"reset mask must have shape ({self.n_envs},); got {mask.shape}")
        self._fresh |= mask

    def act(self, obs: Mapping[str, np.ndarray], active: np.ndarray | None = None) -> np.ndarray:
        """Record obs {key: (n_envs, ...)} and return actions (n_envs, Da); inactive envs repeat their last action."""
        active = np.ones(self.n_envs, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if active.shape != (self.n_envs,):
            raise ValueError(f"active mask must have shape ({self.n_envs},); got {active.shape}")
        self._push(obs, active)
        fresh = self._fresh & active
        self._fresh &= ~active
        if self.temporal_ensemble_k is None:
            return self._act_queue(active, fresh)
        return self._act_ensemble(active, fresh)

    def _push(self, obs: Mapping[str, np.ndarray], active: np.ndarray) -> None:
        """Append the active envs' observations to their history; fresh envs fill the whole window."""
        missing = [key for key in self.obs_keys if key not in obs]
        if missing:
            raise ValueError(f"observations lack the policy's keys {missing}; got keys {sorted(obs)}")
        fresh = self._fresh & active
        shifting = active & ~fresh
        for key in self.obs_keys:
            value = np.asarray(obs[key])  # (n_envs, ...)
            if value.shape[0] != self.n_envs:
                raise ValueError(f"observation {key!r} has batch size {value.shape[0]}; expected n_envs={self.n_envs}")
            history = self._history.get(key)
            if history is None:
                history = np.repeat(value[:, None], self.n_obs_steps, axis=1)  # (n_envs, To, ...)
                self._history[key] = history
            elif history.shape[2:] != value.shape[1:]:
                raise ValueError(f"observation {key!r} changed shape from {history.shape[2:]} to {value.shape[1:]}")
            history[shifting] = np.concatenate([history[shifting, 1:], value[shifting, None]], axis=1)
            history[fresh] = value[fresh, None]

    def _predict(self, envs: np.ndarray) -> np.ndarray:
        """Plan for the envs with indices ``envs`` (n,) in one call; returns their chunks (n, n_action_steps, Da)."""
        device = self.policy.device
        non_blocking = device.type == "cuda"
        batch = {
            key: torch.from_numpy(np.ascontiguousarray(self._history[key][envs])).to(device, non_blocking=non_blocking)
            for key in self.obs_keys
        }  # key -> (n, To, ...), uint8 images stay uint8
        start = time.perf_counter()
        out = self.policy.predict_action(
            batch, sampler=self.sampler, num_steps=self.num_steps, generator=self.generator
        )
        chunk = out["action"].float().cpu().numpy()  # (n, n_action_steps, Da); .cpu() waits for the device
        self.latencies.append(time.perf_counter() - start)
        return chunk

    def _hold(self) -> np.ndarray:
        """The last executed action per env (n_envs, Da), zeros before any; updated in place by the act paths."""
        if self._last_action is None:
            self._last_action = np.zeros((self.n_envs, self.policy.action_dim), dtype=np.float32)
        return self._last_action

    def _act_queue(self, active: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        """Receding horizon: replan the active envs whose queue is empty (or that just reset), pop one action each."""
        self._queue_pos[fresh] = self.n_action_steps
        need = np.flatnonzero(active & (self._queue_pos >= self.n_action_steps))
        if len(need):
            chunk = self._predict(need)  # (n, n_action_steps, Da)
            if self._queue is None:
                self._queue = np.zeros((self.n_envs, *chunk.shape[1:]), dtype=chunk.dtype)
            self._queue[need] = chunk
            self._queue_pos[need] = 0
        action = self._hold()
        if self._queue is None:
            return action.copy()
        envs = np.flatnonzero(active)
        action[envs] = self._queue[envs, self._queue_pos[envs]]
        self._queue_pos[envs] += 1
        return action.copy()

    def _act_ensemble(self, active: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        """ACT temporal ensembling: replan every active env, average the chunks that cover the current step."""
        envs = np.flatnonzero(active)
        if len(envs) == 0:
            return self._hold().copy()
        chunk = self._predict(envs)  # (n, L, Da), L = n_action_steps
        length = self.n_action_steps
        if self._chunks is None:
            self._chunks = np.zeros((self.n_envs, length, *chunk.shape[1:]), dtype=chunk.dtype)
        self._n_chunks[fresh] = 0
        self._chunks[envs] = np.roll(self._chunks[envs], 1, axis=1)  # age j -> j + 1 (the oldest falls off)
        self._chunks[envs, 0] = chunk
        self._n_chunks[envs] = np.minimum(self._n_chunks[envs] + 1, length)
        ages = np.arange(length)
        covering = self._chunks[envs][:, ages, ages]  # (n, L, Da): the chunk of age j holds step j of itself
        count = self._n_chunks[envs][:, None]  # (n, 1)
        rank = count - 1 - ages[None]  # (n, L): 0 = the oldest covering chunk
        weights = np.where(rank >= 0, np.exp(-self.temporal_ensemble_k * np.maximum(rank, 0)), 0.0)  # (n, L)
        weights /= weights.sum(axis=1, keepdims=True)
        action = self._hold()
        action[envs] = np.einsum("nl,nld->nd", weights, covering)
        return action.copy()
