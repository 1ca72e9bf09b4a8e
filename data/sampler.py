"""Fixed-length training windows over episodes (``SequenceSampler``) and train/val episode splits.

A window of ``horizon`` steps starts at episode-relative step ``s`` in
``[-pad_before, L - horizon + pad_after]`` for an episode of length ``L``; steps outside the
episode repeat its first or last frame (Diffusion Policy's edge padding, with
``pad_before = n_obs_steps - 1`` and ``pad_after = n_action_steps - 1``). Observation keys keep
only the first ``n_obs_steps`` steps of the window.

Each window is stored as two integers (episode start, relative start). A batch is gathered
with one ``(B, horizon)`` index array per key, ``np.clip`` doing the padding, so a batch costs
one fancy-index per key instead of a Python loop per sample; this is why it is written here
rather than reusing Diffusion Policy's per-sample ``sample_sequence``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def split_episodes(
    n_episodes: int,
    *,
    val_ratio: float = 0.0,
    seed: int = 0,
    max_train_episodes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train_mask, val_mask) over episodes; disjoint; at least one of each when possible."""
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    rng = np.random.default_rng(seed)
    val = np.zeros(n_episodes, dtype=bool)
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1) if val_ratio > 0 and n_episodes > 1 else 0
    val[rng.choice(n_episodes, size=n_val, replace=False)] = True
    train = ~val
    if max_train_episodes is not None:
        if max_train_episodes < 1:
            raise ValueError(f"max_train_episodes must be >= 1 or None, got {max_train_episodes}")
        idx = np.flatnonzero(train)
        if len(idx) > max_train_episodes:
            keep = rng.choice(idx, size=max_train_episodes, replace=False)
            train = np.zeros(n_episodes, dtype=bool)
            train[keep] = True
    return train, val


class SequenceSampler:
    """Index of all padded windows over a set of episodes, with vectorized batch gathering."""

    def __init__(
        self,
        arrays: Mapping[str, Any],
        episode_ends: np.ndarray,
        *,
        horizon: int,
        n_obs_steps: int | None = None,
        n_action_steps: int | None = None,
        obs_keys: Sequence[str] | None = None,
        action_key: str = "action",
        pad_before: int | None = None,
        pad_after: int | None = None,
        episode_mask: np.ndarray | None = None,
    ) -> None:
        """``arrays``: key -> (N, ...) array (a ReplayBuffer works); obs keys are cut to ``n_obs_steps``."""
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        n_obs_steps = horizon if n_obs_steps is None else n_obs_steps
        n_action_steps = 1 if n_action_steps is None else n_action_steps
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"n_obs_steps must be in [1, horizon={horizon}], got {n_obs_steps}")
        if n_action_steps < 1 or n_obs_steps - 1 + n_action_steps > horizon:
            raise ValueError(
                f"n_action_steps={n_action_steps} does not fit: "
                f"n_obs_steps - 1 + n_action_steps must be <= horizon={horizon}"
            )
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.pad_before = n_obs_steps - 1 if pad_before is None else pad_before
        self.pad_after = n_action_steps - 1 if pad_after is None else pad_after
        if self.pad_before < 0 or self.pad_after < 0:
            raise ValueError("pad_before and pad_after must be >= 0")
        self.action_key = action_key
        self.obs_keys = list(obs_keys) if obs_keys is not None else [k for k in arrays if k != action_key]
        keys = self.obs_keys + [action_key]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise KeyError(f"sampler: keys {missing} not in the data; available: {sorted(arrays)}")
        self._arrays = {k: arrays[k] for k in keys}
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        if episode_mask is None:
            episode_mask = np.ones(len(ends), dtype=bool)
        episode_mask = np.asarray(episode_mask, dtype=bool)
        if episode_mask.shape != ends.shape:
            raise ValueError(f"episode_mask has shape {episode_mask.shape}, expected ({len(ends)},)")
        n = int(ends[-1]) if len(ends) else 0
        for k, a in self._arrays.items():
            if a.shape[0] < n:
                raise ValueError(f"sampler: array {k!r} has {a.shape[0]} steps, episode_ends needs {n}")
        lengths = ends - starts
        # Window starts per episode: -pad_before .. L - horizon + pad_after (inclusive).
        counts = np.maximum(lengths - self.horizon + self.pad_before + self.pad_after + 1, 0) * episode_mask
        ep = np.repeat(np.arange(len(ends)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        self._episode = ep  # (M,) episode index of each window
        self._ep_start = starts[ep]  # (M,)
        self._ep_last = ends[ep] - 1  # (M,)
        self._rel_start = (np.arange(len(ep)) - first - self.pad_before).astype(np.int64)  # (M,)
        self._offsets = np.arange(self.horizon, dtype=np.int64)  # (H,)

    def __len__(self) -> int:
        return len(self._ep_start)

    def episode_of(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """(B,) episode index of each window."""
        return self._episode[np.asarray(indices, dtype=np.int64)]

    def window_indices(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """(B, horizon) absolute step indices of the windows, edge-padded."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"window index out of range for {len(self)} windows")
        rel = self._rel_start[idx, None] + self._offsets  # (B, H)
        steps = self._ep_start[idx, None] + rel
        return np.clip(steps, self._ep_start[idx, None], self._ep_last[idx, None])

    def sample_batch(self, indices: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Gather windows: obs keys (B, n_obs_steps, ...), action (B, horizon, ...)."""
        steps = self.window_indices(indices)  # (B, H)
        obs_steps = steps[:, : self.n_obs_steps]  # (B, To)
        out = {}
        for k, a in self._arrays.items():
            s = steps if k == self.action_key else obs_steps
            if isinstance(a, np.ndarray):
                out[k] = a[s]
            else:  # lazy (zarr) array: read the covering rows once, then gather in memory
                uniq, inv = np.unique(s, return_inverse=True)
                out[k] = np.asarray(a.get_orthogonal_selection((uniq,)))[inv.reshape(s.shape)]
        return out

    def sample_sequence(self, index: int) -> dict[str, np.ndarray]:
        """One window (no batch axis)."""
        return {k: v[0] for k, v in self.sample_batch([index]).items()}
