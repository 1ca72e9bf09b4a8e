"""Tests for data/dataset.py: batched fetching, dtypes, validation split, normalizer fit, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.dataset import ResumableBatchSampler, SequenceDataset, make_dataloader, make_train_loader
from data.replay_buffer import ReplayBuffer


@pytest.fixture
def buffer(tmp_path) -> ReplayBuffer:
    buf = ReplayBuffer.create(tmp_path / "d.zarr")
    for i in range(6):
        t = 10 + i
        steps = np.arange(t, dtype=np.float32)
        buf.add_episode(
            {
                "image": np.full((t, 8, 8, 3), i, np.uint8),
                "agent_pos": np.stack([steps, np.full(t, i, np.float32)], -1),
                "action": np.stack([steps + 100 * i, -steps], -1),
            }
        )
    return ReplayBuffer.open(tmp_path / "d.zarr", in_memory=True)


def _ds(buffer: ReplayBuffer, **kw) -> SequenceDataset:
    return SequenceDataset(buffer, horizon=8, n_obs_steps=2, n_action_steps=4, obs_keys=["image", "agent_pos"], **kw)


def test_batch_shapes_and_dtypes(buffer: ReplayBuffer) -> None:
    ds = _ds(buffer)
    batch = ds.__getitems__([0, 5, 17])
    assert batch["image"].shape == (3, 2, 8, 8, 3) and batch["image"].dtype == torch.uint8
    assert batch["agent_pos"].shape == (3, 2, 2) and batch["agent_pos"].dtype == torch.float32
    assert batch["action"].shape == (3, 8, 2) and batch["action"].dtype == torch.float32
    # Obs and action of a window refer to the same steps: agent_pos[..., 0] == action[..., 0] - 100 * episode.
    ep = batch["agent_pos"][:, 0, 1]
    torch.testing.assert_close(batch["agent_pos"][..., 0], batch["action"][:, :2, 0] - 100 * ep[:, None])
    single = ds[5]
    torch.testing.assert_close(single["action"], batch["action"][1])


def test_dataloader_with_and_without_workers_agree(buffer: ReplayBuffer) -> None:
    ds = _ds(buffer)
    a = [b["action"] for b in make_dataloader(ds, batch_size=16, seed=1)]
    b = [b["action"] for b in make_dataloader(ds, batch_size=16, seed=1, num_workers=2)]
    assert len(a) == len(ds) // 16 and all(x.shape == (16, 8, 2) for x in a)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    c = [b["action"] for b in make_dataloader(ds, batch_size=16, seed=2)]
    assert not torch.equal(a[0], c[0])


def test_validation_split_is_disjoint(buffer: ReplayBuffer) -> None:
    train = _ds(buffer, val_ratio=0.34, seed=0)
    val = train.get_validation_dataset()
    assert not (train.episode_mask & val.episode_mask).any()
    assert val.episode_mask.sum() == 2 and len(val) > 0
    train_eps = set(train.__getitems__(range(len(train)))["agent_pos"][:, 0, 1].tolist())
    val_eps = set(val.__getitems__(range(len(val)))["agent_pos"][:, 0, 1].tolist())
    assert train_eps.isdisjoint(val_eps) and len(train_eps) == 4


def test_normalizer_fitted_on_train_episodes_only(buffer: ReplayBuffer) -> None:
    train = _ds(buffer, val_ratio=0.34, seed=0)
    norm = train.get_normalizer({"action": "limits", "agent_pos": "limits", "image": "image"})
    eps = np.flatnonzero(train.episode_mask)
    assert norm.stats("agent_pos")["input_max"][1].item() == eps.max()
    assert norm.stats("agent_pos")["input_min"][1].item() == eps.min()
    assert sorted(norm.keys()) == ["action", "agent_pos", "image"]


def test_missing_key_and_empty_dataset(buffer: ReplayBuffer) -> None:
    with pytest.raises(KeyError, match="'state'"):
        SequenceDataset(buffer, horizon=8, n_obs_steps=2, n_action_steps=4, obs_keys=["state"])
    long = SequenceDataset(buffer, horizon=64, n_obs_steps=1, n_action_steps=1, obs_keys=["agent_pos"])
    with pytest.raises(ValueError, match="no windows"):
        make_dataloader(long, batch_size=4)


def test_resumable_batches_continue_the_uninterrupted_order() -> None:
    full = ResumableBatchSampler(10, 3, seed=5)
    stream = [b for b, _ in zip(full, range(9))]  # 3 batches per epoch: 3 epochs
    assert all(len(b) == 3 for b in stream)
    for epoch in range(3):  # each epoch visits distinct samples
        seen = sum(stream[3 * epoch : 3 * epoch + 3], [])
        assert len(set(seen)) == 9
    assert stream[:3] != stream[3:6]  # epochs are reshuffled
    resumed = ResumableBatchSampler(10, 3, seed=5, start_batch=4)
    assert [b for b, _ in zip(resumed, range(5))] == stream[4:]
    other = ResumableBatchSampler(10, 3, seed=6)
    assert [b for b, _ in zip(other, range(3))] != stream[:3]
    with pytest.raises(ValueError, match="fewer than batch_size"):
        ResumableBatchSampler(2, 3)


def test_train_loader_yields_whole_batches_from_a_start_batch(buffer: ReplayBuffer) -> None:
    ds = _ds(buffer)
    it = iter(make_train_loader(ds, batch_size=4, seed=1, start_batch=2))
    first = next(it)
    expected = ds.__getitems__(next(b for i, b in enumerate(ResumableBatchSampler(len(ds), 4, seed=1)) if i == 2))
    assert all(torch.equal(first[k], expected[k]) for k in expected)


def test_batches_carry_their_episodes_instruction(tmp_path) -> None:
    buf = ReplayBuffer.create(tmp_path / "i.zarr")
    texts = ["put the cube in the left bin", "put the cube in the right bin", "go around the left end of the wall"]
    for i, text in enumerate(texts):
        t = 10 + i
        buf.add_episode(
            {"agent_pos": np.full((t, 2), i, np.float32), "action": np.zeros((t, 2), np.float32)}, {"instruction": text}
        )
    ds = SequenceDataset(
        ReplayBuffer.open(tmp_path / "i.zarr"), horizon=8, n_obs_steps=2, n_action_steps=4, obs_keys=["agent_pos"]
    )
    batch = ds.__getitems__(list(range(len(ds))))
    episode = batch["agent_pos"][:, 0, 0].long().tolist()
    assert batch["instruction"] == [texts[e] for e in episode] and set(episode) == {0, 1, 2}
    assert ds.instructions == sorted(texts)
    assert ds[0]["instruction"] == texts[0]


def test_stores_without_instructions_give_none(buffer: ReplayBuffer) -> None:
    ds = _ds(buffer)
    assert "instruction" not in ds.__getitems__([0]) and ds.instructions == []
