"""Receding-horizon control of a ChunkPolicy, batched over the envs of a vector env.

The controller keeps the last ``n_obs_steps`` observations of every env (the first observation of an
episode repeated to fill the window) and executes action chunks: positions ``[n_obs_steps-1, ...)`` of the
policy's ``action_pred``, position n_obs_steps - 1 being the step the chunk was requested at. When and how
chunks are requested and merged is the ``Execution`` strategy's (policy.execution): by default ``sync``, which
requests a chunk every ``n_action_steps`` steps and executes it at once (the world waits). The asynchronous
strategies keep the env stepping for ``delay`` steps while a chunk is computed; the chunk conditions on the
observations of the step it was requested at. Envs that request a chunk at the same step are batched into one
``predict_action`` call; an env with actions left keeps executing its plan. Each env keeps its own clock, so
per-env resets start its schedule over (the first chunk of an episode is waited for).

With ``temporal_ensemble_k`` set (ACT's temporal ensembling, sync only) every env replans at every step, and
the executed action is the average over all chunks predicted in the last ``n_action_steps`` steps of the
action each of them holds for the current step, with weights ``exp(-k * i)``, ``i = 0`` the oldest.

Every executed action's jump |a_t - a_(t-1)| (Euclidean, action units) is recorded, split into steps where a
newly arrived chunk takes over (chunk switches; every step under temporal ensembling) and the others.

Orchestration only: numpy in (observations), numpy out (actions); the policy does the maths.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from policy.execution import Execution, align, chunk_length, merge
from policy.rtc import Guidance, soft_mask


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
        execution: Execution | None = None,
        instruction: str | None = None,
        guidance_scale: float = 1.0,
    ) -> None:
        """``instruction`` and ``guidance_scale``: what every chunk of an instruction-conditioned policy is asked."""
        if n_envs < 1:
            raise ValueError(f"n_envs={n_envs} must be >= 1")
        if temporal_ensemble_k is not None and not np.isfinite(temporal_ensemble_k):
            raise ValueError(f"temporal_ensemble_k={temporal_ensemble_k} must be a finite float or None")
        execution = Execution() if execution is None else execution
        if temporal_ensemble_k is not None and execution.strategy != "sync":
            raise ValueError(f"temporal_ensemble_k replans every step with the world waiting; got {execution.strategy}")
        self.policy = policy
        self.n_envs = n_envs
        self.sampler = sampler
        self.num_steps = num_steps
        self.generator = generator
        self.temporal_ensemble_k = temporal_ensemble_k
        self.instruction = instruction
        self.guidance_scale = guidance_scale
        self.n_obs_steps = int(policy.n_obs_steps)
        self.n_action_steps = int(policy.n_action_steps)
        self.obs_keys = tuple(policy.obs_shapes)
        self.latencies: list[float] = []  # seconds per predict_action call
        self.jumps = {"switch": [0.0, 0], "within": [0.0, 0]}  # [sum of |a_t - a_(t-1)|, count] per kind of step
        self._history: dict[str, np.ndarray] = {}  # key -> (n_envs, n_obs_steps, ...)
        self._fresh = np.ones(n_envs, dtype=bool)  # env starts a new episode at its next observation
        self._last_action = np.zeros((n_envs, int(policy.action_dim)), dtype=np.float32)  # (n_envs, Da)
        self._has_last = np.zeros(n_envs, dtype=bool)  # env executed an action in its current episode
        if temporal_ensemble_k is not None:
            self.execution = execution
            self._chunks: np.ndarray | None = None  # (n_envs, n_action_steps, n_action_steps, Da), axis 1 = age
            self._n_chunks = np.zeros(n_envs, dtype=np.int64)  # chunks predicted since the env's reset (capped)
            return
        sampler_name = getattr(sampler if sampler is not None else getattr(policy, "sampler", None), "name", None)
        self.execution = execution.bind(policy, sampler_name)
        self.chunk_length = chunk_length(policy)  # H
        shape = (n_envs, self.chunk_length, int(policy.action_dim))
        self._plan = np.zeros(shape, dtype=np.float32)  # (n_envs, H, Da) actions for steps plan_start + j
        self._plan_start = np.zeros(n_envs, dtype=np.int64)
        self._has_plan = np.zeros(n_envs, dtype=bool)
        self._pending = np.zeros(shape, dtype=np.float32)  # (n_envs, H, Da) the chunk being computed
        self._pending_start = np.zeros(n_envs, dtype=np.int64)  # step it was requested at
        self._pending_due = np.full(n_envs, -1, dtype=np.int64)  # step it arrives at; -1 = none in flight
        self._clock = np.zeros(n_envs, dtype=np.int64)  # steps executed in the env's episode
        self._next_request = np.zeros(n_envs, dtype=np.int64)

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
        self._has_last[fresh] = False
        envs = np.flatnonzero(active)
        if len(envs) == 0:
            return self._last_action.copy()
        if self.temporal_ensemble_k is None:
            action, switched = self._act_plan(envs, fresh)
        else:
            action, switched = self._act_ensemble(envs, fresh), np.ones(len(envs), dtype=bool)
        self._record_jumps(envs, action, switched)
        self._last_action[envs] = action
        self._has_last[envs] = True
        return self._last_action.copy()

    def jump_summary(self) -> dict[str, float | int | None]:
        """Mean |a_t - a_(t-1)| at chunk switches and at the other steps (None if there were none), switch count."""
        (switch_sum, switches), (within_sum, within) = self.jumps["switch"], self.jumps["within"]
        return {
            "switch_jump": switch_sum / switches if switches else None,
            "within_jump": within_sum / within if within else None,
            "n_switches": switches,
        }

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

    def _predict(self, envs: np.ndarray, guidance: Guidance | None = None) -> dict[str, np.ndarray]:
        """One predict_action call for the envs with indices ``envs`` (n,); its outputs as float32 numpy arrays."""
        device = self.policy.device
        non_blocking = device.type == "cuda"
        batch = {
            key: torch.from_numpy(np.ascontiguousarray(self._history[key][envs])).to(device, non_blocking=non_blocking)
            for key in self.obs_keys
        }  # key -> (n, To, ...), uint8 images stay uint8
        extra: dict[str, Any] = {} if guidance is None else {"guidance": guidance}
        if self.instruction is not None:
            extra["instruction"] = self.instruction
        if self.guidance_scale != 1:
            extra["guidance_scale"] = self.guidance_scale
        start = time.perf_counter()
        out = self.policy.predict_action(
            batch, sampler=self.sampler, num_steps=self.num_steps, generator=self.generator, **extra
        )
        result = {key: value.float().cpu().numpy() for key, value in out.items()}  # .cpu() waits for the device
        self.latencies.append(time.perf_counter() - start)
        return result

    def _act_plan(self, envs: np.ndarray, fresh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Install arriving chunks, request new ones where due, execute one plan action per env in ``envs``.

        Returns the actions (n, Da) and whether each env switched to a new chunk at this step (n,).
        """
        self._clock[fresh] = 0
        self._next_request[fresh] = 0
        self._has_plan[fresh] = False
        self._pending_due[fresh] = -1
        now = self._clock[envs]  # (n,)
        switched = np.zeros(self.n_envs, dtype=bool)
        arriving = envs[self._pending_due[envs] == now]
        if len(arriving):
            self._install(arriving, self._pending[arriving], self._pending_start[arriving])
            self._pending_due[arriving] = -1
            switched[arriving] = True
        requesting = envs[self._next_request[envs] == now]
        if len(requesting):
            chunk = self._request(requesting)  # (m, H, Da)
            when = self._clock[requesting]
            waited = ~self._has_plan[requesting] | (self.execution.delay == 0)  # the first chunk is waited for
            self._install(requesting[waited], chunk[waited], when[waited])
            switched[requesting[waited]] = True
            later = requesting[~waited]
            self._pending[later] = chunk[~waited]
            self._pending_start[later] = when[~waited]
            self._pending_due[later] = when[~waited] + self.execution.delay
            self._next_request[requesting] = when + self.execution.horizon
        action = self._plan[envs, now - self._plan_start[envs]]  # (n, Da)
        self._clock[envs] += 1
        return action, switched[envs]

    def _request(self, envs: np.ndarray) -> np.ndarray:
        """The chunks (n, H, Da) requested now for ``envs``, from their current observation history."""
        start = self.n_obs_steps - 1
        guidance = self._guidance(envs) if self.execution.strategy == "rtc" else None
        return self._predict(envs, guidance)["action_pred"][:, start : start + self.chunk_length]

    def _guidance(self, envs: np.ndarray) -> Guidance | None:
        """RTC's target for ``envs``: their plans as seen from now, the soft mask and the committed prefix."""
        guided = self._has_plan[envs]  # (n,) envs without a plan (the first chunk) sample unguided
        if not guided.any():
            return None
        d, s, length = self.execution.delay, self.execution.horizon, self.chunk_length
        offset = np.where(guided, self._clock[envs] - self._plan_start[envs], 0)  # fresh envs: their old plan unread
        aligned, _ = align(self._plan[envs], offset)  # (n, H, Da)
        aligned[~guided] = 0
        start, horizon = self.n_obs_steps - 1, int(self.policy.horizon)
        target = np.zeros((len(envs), horizon, aligned.shape[2]), dtype=np.float32)  # (n, horizon, Da)
        target[:, start : start + length] = aligned
        weights = np.zeros((len(envs), horizon), dtype=np.float32)  # (n, horizon)
        weights[guided, start : start + length] = soft_mask(length, d, length - s, self.execution.mask).numpy()
        frozen = np.zeros((len(envs), horizon), dtype=bool)
        frozen[guided, start : start + d] = True
        device = self.policy.device
        return Guidance(
            target=torch.from_numpy(target).to(device),
            weights=torch.from_numpy(weights).to(device),
            frozen=torch.from_numpy(frozen).to(device),
            beta=self.execution.beta,
        )

    def _install(self, envs: np.ndarray, chunk: np.ndarray, start: np.ndarray) -> None:
        """Make chunks (n, H, Da) requested at steps ``start`` (n,) the plans of ``envs``, merged per the strategy."""
        if len(envs) == 0:
            return
        had = self._has_plan[envs]
        merged = chunk.copy()
        if had.any():
            offset = start[had] - self._plan_start[envs[had]]
            merged[had] = merge(self.execution, self._plan[envs[had]], chunk[had], offset)
        self._plan[envs] = merged
        self._plan_start[envs] = start
        self._has_plan[envs] = True

    def _record_jumps(self, envs: np.ndarray, action: np.ndarray, switched: np.ndarray) -> None:
        """Add |a_t - a_(t-1)| of the envs that acted before in their episode to the switch / within sums."""
        has = self._has_last[envs]
        jump = np.linalg.norm(action - self._last_action[envs], axis=-1).astype(np.float64)  # (n,)
        for kind, mask in (("switch", has & switched), ("within", has & ~switched)):
            self.jumps[kind][0] += float(jump[mask].sum())
            self.jumps[kind][1] += int(mask.sum())

    def _act_ensemble(self, envs: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        """ACT temporal ensembling: replan every active env, average the chunks that cover the current step."""
        chunk = self._predict(envs)["action"]  # (n, L, Da), L = n_action_steps
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
        return np.einsum("nl,nld->nd", weights, covering).astype(np.float32)
