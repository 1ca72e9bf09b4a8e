"""Tests for data/sampler.py: exact padded windows, obs truncation, splits."""

from __future__ import annotations

import numpy as np
import pytest

from data.replay_buffer import ReplayBuffer
from data.sampler import SequenceSampler, split_episodes


def _arrays() -> tuple[dict[str, np.ndarray], np.ndarray]:
    # Episode 0: steps 0..2 (values 0,1,2); episode 1: steps 3..7 (values 10..14).
    values = np.array([0, 1, 2, 10, 11, 12, 13, 14], dtype=np.float32)
    arrays = {"obs": values[:, None], "action": values[:, None] * 2}
    return arrays, np.array([3, 8])


def test_exact_windows_at_episode_edges() -> None:
    arrays, ends = _arrays()
    s = SequenceSampler(arrays, ends, horizon=4, n_obs_steps=2, n_action_steps=3)
    # pad_before = 1, pad_after = 2: starts -1..L-4+2 per episode -> ep0: -1..1 (3), ep1: -1..3 (5).
    assert len(s) == 8
    b = s.sample_batch(np.arange(8))
    expected_action = 2 * np.array(
        [
            [0, 0, 1, 2],
            [0, 1, 2, 2],
            [1, 2, 2, 2],
            [10, 10, 11, 12],
            [10, 11, 12, 13],
            [11, 12, 13, 14],
            [12, 13, 14, 14],
            [13, 14, 14, 14],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(b["action"][..., 0], expected_action)
    np.testing.assert_array_equal(b["obs"][..., 0], expected_action[:, :2] / 2)
    assert b["obs"].shape == (8, 2, 1) and b["action"].shape == (8, 4, 1)


def test_windows_never_cross_episodes() -> None:
    arrays, ends = _arrays()
    s = SequenceSampler(arrays, ends, horizon=6, n_obs_steps=3, n_action_steps=4)
    b = s.sample_batch(np.arange(len(s)))["action"][..., 0]
    for row in b:
        assert (row < 10).all() or (row >= 20).all()  # ep0 values 0..4, ep1 values 20..28


def test_short_episode_without_padding_has_no_windows() -> None:
    arrays, ends = _arrays()
    s = SequenceSampler(arrays, ends, horizon=4, n_obs_steps=1, n_action_steps=1)
    # pad 0: ep0 (3 steps) has no window; ep1 (5 steps) has 2.
    assert len(s) == 2
    np.testing.assert_array_equal(s.sample_batch([0, 1])["action"][..., 0], [[20, 22, 24, 26], [22, 24, 26, 28]])


def test_episode_mask_and_single_sample() -> None:
    arrays, ends = _arrays()
    s = SequenceSampler(arrays, ends, horizon=4, n_obs_steps=2, n_action_steps=3, episode_mask=np.array([False, True]))
    assert len(s) == 5
    np.testing.assert_array_equal(s.sample_sequence(0)["obs"][:, 0], [10, 10])


def test_lazy_zarr_arrays_match_numpy(tmp_path) -> None:
    arrays, ends = _arrays()
    buf = ReplayBuffer.create(tmp_path / "s.zarr", chunk_bytes=8)
    buf.add_episode({k: v[:3] for k, v in arrays.items()})
    buf.add_episode({k: v[3:] for k, v in arrays.items()})
    lazy = SequenceSampler(
        {k: buf.array(k) for k in buf.keys()}, buf.episode_ends, horizon=4, n_obs_steps=2, n_action_steps=3
    )
    eager = SequenceSampler(arrays, ends, horizon=4, n_obs_steps=2, n_action_steps=3)
    idx = np.array([7, 0, 3, 3])
    for k in ("obs", "action"):
        np.testing.assert_array_equal(lazy.sample_batch(idx)[k], eager.sample_batch(idx)[k])


def test_bad_arguments() -> None:
    arrays, ends = _arrays()
    with pytest.raises(ValueError, match="n_obs_steps"):
        SequenceSampler(arrays, ends, horizon=4, n_obs_steps=5)
    with pytest.raises(ValueError, match="n_action_steps"):
        SequenceSampler(arrays, ends, horizon=4, n_obs_steps=2, n_action_steps=4)
    with pytest.raises(KeyError, match="'image'"):
        SequenceSampler(arrays, ends, horizon=4, obs_keys=["image"])
    with pytest.raises(ValueError, match="episode_mask"):
        SequenceSampler(arrays, ends, horizon=4, episode_mask=np.ones(3, bool))
    s = SequenceSampler(arrays, ends, horizon=4, n_obs_steps=2, n_action_steps=3)
    with pytest.raises(IndexError):
        s.sample_batch([8])


def test_split_disjoint_seeded_and_capped() -> None:
    train, val = split_episodes(50, val_ratio=0.2, seed=3)
    assert not (train & val).any() and (train | val).all()
    assert val.sum() == 10
    t2, v2 = split_episodes(50, val_ratio=0.2, seed=3)
    np.testing.assert_array_equal(val, v2)
    _, v3 = split_episodes(50, val_ratio=0.2, seed=4)
    assert (v3 != val).any()
    capped, v4 = split_episodes(50, val_ratio=0.2, seed=3, max_train_episodes=7)
    assert capped.sum() == 7 and not (capped & v4).any()
    t1, v1 = split_episodes(2, val_ratio=0.01, seed=0)
    assert t1.sum() == 1 and v1.sum() == 1  # at least one of each
    t0, v0 = split_episodes(5, val_ratio=0.0)
    assert t0.all() and not v0.any()
    with pytest.raises(ValueError, match="val_ratio"):
        split_episodes(5, val_ratio=1.0)
