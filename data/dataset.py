"""Torch dataset of training windows over a ``ReplayBuffer`` (batched fetching).

``SequenceDataset`` implements ``__getitems__``, so a ``DataLoader`` hands it a whole list of
indices and it gathers the batch with one vectorized index per key (``SequenceSampler``),
instead of the default per-sample ``__getitem__`` plus ``default_collate``. Images stay uint8
(B, To, H, W, 3): the training device converts them (4x less memory traffic than float32).
Use ``make_dataloader`` to get a loader wired for this (identity collate, seeded shuffling,
pinned memory on CUDA).

A store with per-episode instructions (``meta/instruction``, strings) adds ``batch["instruction"]``: a list of B
strings, each the instruction of the window's episode (``instruction_key`` names another meta key, None leaves
them out).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data.normalizer import Normalizer
from data.replay_buffer import ReplayBuffer
from data.sampler import SequenceSampler, split_episodes


class SequenceDataset(Dataset):
    """Windows of (obs: n_obs_steps, action: horizon) from a buffer, as torch tensors."""

    def __init__(
        self,
        buffer: ReplayBuffer,
        *,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        obs_keys: Sequence[str],
        action_key: str = "action",
        val_ratio: float = 0.0,
        max_train_episodes: int | None = None,
        seed: int = 0,
        split: str = "train",
        instruction_key: str | None = "instruction",
    ) -> None:
        """Index the ``split`` ("train" or "val") episodes of ``buffer`` (instructions: ``meta/<instruction_key>``)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        missing = [k for k in [*obs_keys, action_key] if k not in buffer]
        if missing:
            raise KeyError(f"dataset: keys {missing} are not in the store {buffer.path}; it has {buffer.keys()}")
        self.buffer = buffer
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self._cfg = dict(
            horizon=horizon,
            n_obs_steps=n_obs_steps,
            n_action_steps=n_action_steps,
            obs_keys=self.obs_keys,
            action_key=action_key,
        )
        self._instruction_key = instruction_key
        self._split = dict(val_ratio=val_ratio, max_train_episodes=max_train_episodes, seed=seed)
        train, val = split_episodes(buffer.n_episodes, **self._split)
        self.episode_mask = train if split == "train" else val
        arrays = {k: buffer.array(k) for k in [*self.obs_keys, action_key]}
        self.sampler = SequenceSampler(arrays, buffer.episode_ends, episode_mask=self.episode_mask, **self._cfg)
        has = instruction_key is not None and instruction_key in buffer.meta_keys()
        self.episode_instructions = [str(t) for t in buffer.episode_meta(instruction_key)] if has else None

    @property
    def instructions(self) -> list[str]:
        """The distinct instructions of this split's episodes, sorted (empty for a store without instructions)."""
        if self.episode_instructions is None:
            return []
        return sorted({t for t, m in zip(self.episode_instructions, self.episode_mask) if m})

    def get_validation_dataset(self) -> "SequenceDataset":
        """The held-out episodes with the same windowing."""
        return SequenceDataset(
            self.buffer, split="val", instruction_key=self._instruction_key, **self._cfg, **self._split
        )

    def get_normalizer(self, modes: Mapping[str, str]) -> Normalizer:
        """Fit a ``Normalizer`` on the training episodes' steps for the keys in ``modes``."""
        ends = self.buffer.episode_ends
        starts = np.concatenate([[0], ends[:-1]])
        steps = np.concatenate(
            [np.arange(s, e) for s, e, m in zip(starts, ends, self.episode_mask, strict=True) if m] or [[]]
        )
        steps = steps.astype(np.int64)
        data: dict[str, Any] = {}
        for key, mode in modes.items():
            arr = self.buffer.array(key)
            # Image statistics are fixed (uint8 -> [0, 1]): pass the lazy array, never read the pixels.
            data[key] = arr if mode == "image" else np.asarray(arr[: self.buffer.n_steps])[steps]
        return Normalizer.fit(data, modes)

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One window (no batch axis)."""
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A whole batch: obs keys (B, n_obs_steps, ...), action (B, horizon, Da)[, instruction: B strings]."""
        index = np.asarray(indices, dtype=np.int64)
        batch: dict[str, Any] = {
            k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.sampler.sample_batch(index).items()
        }
        if self.episode_instructions is not None:
            batch["instruction"] = [self.episode_instructions[e] for e in self.sampler.episode_of(index)]
        return batch


def _identity(batch: Any) -> Any:
    """Collate for ``__getitems__`` datasets: the batch is already assembled."""
    return batch


def make_dataloader(
    dataset: SequenceDataset,
    *,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = True,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader that fetches whole batches via ``__getitems__``; pins memory when CUDA is present."""
    if len(dataset) == 0:
        raise ValueError("dataset has no windows: episodes are shorter than the horizon or the split is empty")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=_identity,
        generator=generator,
        drop_last=drop_last and len(dataset) >= batch_size,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=num_workers > 0,
    )


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless shuffled batches whose order is a pure function of (seed, batch number).

    Epoch e is ``randperm(n)`` from a generator seeded with (seed, e), cut into full batches, so a
    run resumed at batch k sees exactly the batches an uninterrupted run would, without storing any
    generator state. ``batch_size`` is the global batch of ``world_size`` processes: process ``rank``
    gets rows [rank * b, (rank + 1) * b) of every batch (b = batch_size / world_size), so the processes
    together see the batches of one process, each a disjoint part.
    """

    def __init__(
        self,
        n_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(f"batch_size={batch_size} must split evenly over world_size={world_size} (rank {rank})")
        if n_samples < batch_size:
            raise ValueError(
                f"the dataset has {n_samples} windows, fewer than batch_size={batch_size}; "
                "collect more episodes or lower the batch size"
            )
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        self.batches_per_epoch = n_samples // batch_size
        self.rows = batch_size // world_size
        self.first_row = rank * self.rows

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The sample permutation of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_samples, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, index = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            order = self.epoch_order(epoch)
            for b in range(index, self.batches_per_epoch):
                start = b * self.batch_size + self.first_row
                yield order[start : start + self.rows].tolist()
            epoch, index = epoch + 1, 0


def make_train_loader(
    dataset: SequenceDataset,
    *,
    batch_size: int,
    seed: int = 0,
    start_batch: int = 0,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """An endless loader over ``ResumableBatchSampler`` batches from batch number ``start_batch`` (``rank``'s rows)."""
    sampler = ResumableBatchSampler(
        len(dataset), batch_size, seed=seed, start_batch=start_batch, rank=rank, world_size=world_size
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG stream untouched
        collate_fn=_identity,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=num_workers > 0,
    )


@dataclass(frozen=True)
class TrainingData:
    """What the training loop consumes: train and validation windows and the task's shape_meta."""

    train_set: SequenceDataset
    val_set: SequenceDataset
    shape_meta: Mapping[str, Any]  # {"obs": {key: {"shape", "type"}}, "action": {"shape"}}
