"""Execution strategies for action chunks while the world keeps moving: settings, their checks, and chunk merging.

Time is counted in control steps per env. A chunk requested at step k conditions on the observations up to k; with an
inference delay of d steps it becomes available at step k + d (in simulation the chunk is computed at step k and held
back d steps, so runs stay deterministic). Its position j holds the action for step k + j: positions are the policy's
``action_pred`` from index n_obs_steps - 1 on, H = horizon - n_obs_steps + 1 of them. Every strategy requests a chunk
every s steps (the execution horizon; default the policy's n_action_steps); the first chunk of an episode is waited
for, like a robot that starts moving once its first plan exists.

    sync         the world waits for every chunk (today's receding horizon, the reference); d must be 0
    async_naive  request s steps after the previous request, switch to the new chunk when it arrives (its first d
                 positions are already in the past and are skipped)
    async_blend  as async_naive, but where the new chunk overlaps the current plan the executed action is
                 (1 - w) old + w new (LeRobot's async aggregation; its weighted_average is w = 0.7)
    rtc          real-time chunking: the new chunk is sampled with guidance towards the current plan (policy.rtc),
                 its first d positions frozen to the committed actions

Constraints: d <= s (one chunk in flight) and s <= H - d (a chunk lasts until the next one arrives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from policy.rtc import MASK_SCHEDULES, RTC_SAMPLERS

STRATEGIES = ("sync", "async_naive", "async_blend", "rtc")


def chunk_length(policy: Any) -> int:
    """H: the chunk positions from the current step on, horizon - n_obs_steps + 1."""
    return int(policy.horizon) - int(policy.n_obs_steps) + 1


def delay_from_latency(latency_s: float, fps: float) -> int:
    """d = ceil(latency x control rate): the control steps that pass while one chunk is computed."""
    return max(0, math.ceil(latency_s * fps - 1e-9))


@dataclass(frozen=True)
class Execution:
    """How chunks are scheduled and merged: strategy, inference delay d, execution horizon s and their parameters."""

    strategy: str = "sync"  # one of STRATEGIES
    delay: int | str = 0  # d in control steps, or "auto" (resolved by policy.evaluation from the measured latency)
    horizon: int | None = None  # s: steps between chunk requests; None = the policy's n_action_steps
    beta: float = 5.0  # rtc: guidance weight clip
    mask: str = "exp"  # rtc: soft mask schedule over the overlap (policy.rtc.MASK_SCHEDULES)
    new_weight: float = 0.7  # async_blend: weight of the new chunk where it overlaps the old one

    def __post_init__(self) -> None:
        """One-line ValueError for an unknown strategy or a setting out of range."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown execution {self.strategy!r}; valid options: {', '.join(STRATEGIES)}")
        if self.delay != "auto" and (isinstance(self.delay, bool) or not isinstance(self.delay, int) or self.delay < 0):
            raise ValueError(f"inference_delay must be an int >= 0 or auto; got {self.delay!r}")
        if self.strategy == "sync" and self.delay != 0:
            raise ValueError(
                f"execution=sync pauses the world while the policy computes, so inference_delay must be 0 (got "
                f"{self.delay}); use execution=async_naive, async_blend or rtc"
            )
        if self.horizon is not None and (isinstance(self.horizon, bool) or not isinstance(self.horizon, int)):
            raise ValueError(f"execution horizon must be an int or null; got {self.horizon!r}")
        if not self.beta >= 0:
            raise ValueError(f"rtc beta must be >= 0; got {self.beta}")
        if self.mask not in MASK_SCHEDULES:
            raise ValueError(f"unknown rtc mask {self.mask!r}; valid options: {', '.join(MASK_SCHEDULES)}")
        if not 0 <= self.new_weight <= 1:
            raise ValueError(f"async_blend new_weight must be in [0, 1]; got {self.new_weight}")

    def bind(self, policy: Any, sampler_name: str | None = None) -> Execution:
        """These settings with s filled in from the policy; ValueError unless d <= s <= H - d and RTC can run."""
        if self.delay == "auto":
            raise ValueError("inference_delay=auto must be resolved to steps first (policy.evaluation measures it)")
        horizon = int(policy.n_action_steps) if self.horizon is None else self.horizon
        length = chunk_length(policy)
        if not (self.delay <= horizon <= length - self.delay and horizon >= 1):
            raise ValueError(
                f"execution horizon s={horizon} and inference_delay d={self.delay} need 1 <= s, d <= s <= H - d, "
                f"H = horizon - n_obs_steps + 1 = {length}"
            )
        if self.strategy == "rtc" and sampler_name is not None and sampler_name not in RTC_SAMPLERS:
            raise ValueError(
                f"execution=rtc runs with sampler euler (flow models) or ddim (DDPM models); got {sampler_name!r}"
            )
        return replace(self, horizon=horizon)

    def describe(self) -> dict[str, Any]:
        """The settings that matter for this strategy, for results files."""
        settings: dict[str, Any] = {"execution": self.strategy, "inference_delay": self.delay}
        settings["execution_horizon"] = self.horizon
        if self.strategy == "rtc":
            settings |= {"rtc_beta": self.beta, "rtc_mask": self.mask}
        if self.strategy == "async_blend":
            settings["blend_new_weight"] = self.new_weight
        return settings


def align(plan: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plans (n, H, Da) seen from ``offset`` (n,) steps later: (values (n, H, Da), covered (n, H) bool).

    Position j of the result is plan position offset + j; positions past the plan's end are zeros, not covered.
    """
    n, length = plan.shape[:2]
    index = offset[:, None] + np.arange(length)[None]  # (n, H)
    covered = index < length
    values = plan[np.arange(n)[:, None], np.minimum(index, length - 1)]  # (n, H, Da)
    return np.where(covered[..., None], values, 0).astype(plan.dtype), covered


def merge(execution: Execution, plan: np.ndarray, chunk: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The new plans (n, H, Da) once chunks (n, H, Da) requested ``offset`` (n,) steps after the plans' start arrive.

    Positions before the delay keep the committed (executed) actions of the old plan; async_blend averages the
    rest of the overlap, the other strategies take the new chunk (rtc already guided it during sampling).
    """
    old, covered = align(plan, offset)
    committed = covered & (np.arange(plan.shape[1])[None] < execution.delay)  # (n, H)
    merged = chunk
    if execution.strategy == "async_blend":
        w = execution.new_weight
        merged = np.where(covered[..., None], (1 - w) * old + w * chunk, chunk)
    return np.where(committed[..., None], old, merged).astype(chunk.dtype)
