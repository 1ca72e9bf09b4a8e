"""Several processes training one model under torchrun: which process this is, its process group, its batch rows.

``torchrun --nproc_per_node=N train.py ...`` (``--nnodes``/``--rdzv_endpoint`` for several machines) starts N
copies of the entry point with RANK, WORLD_SIZE and LOCAL_RANK set. ``World.from_env`` reads them; a plain
``python train.py`` has none and is a world of one, where every collective here returns at once.
``process_group`` joins torch.distributed for the training device: NCCL on CUDA (one GPU per process, picked by
LOCAL_RANK), gloo on CPU, with a collective timeout, so a rank that stops answering fails the others after
``timeout_s`` instead of hanging them. A rank that exits is noticed sooner: its peers' collectives fail on the
closed connection, and torchrun stops the other processes and reports the failed rank with its traceback.

``BatchShard`` is how a global batch is split: rank r holds rows [r * B / N, (r + 1) * B / N). The ranks draw
the training randomness (crop offsets, noise, times) for the whole global batch from identical random streams
and keep their rows, and the loss is computed on the gathered global batch, so N processes draw, see and
optimize exactly what one process does with the same batch (``ChunkPolicy.compute_loss(batch, shard=...)``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


class PeerFailed(RuntimeError):
    """Rank 0 failed in a step every rank waits for; it reported why, the others only stop."""


class _MainFailed:
    """What rank 0 broadcasts instead of a result when the code the others wait for raised."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: global rank, number of processes, rank on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (one process without them)."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    @classmethod
    def current(cls) -> World:
        """The initialized process group's world, else a world of one."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def distributed(self) -> bool:
        """Whether other processes share the work."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which owns the run directory, the logs and the checkpoints."""
        return self.rank == 0

    @property
    def prefix(self) -> str:
        """The prefix of messages from ranks other than 0 ("rank 3: "), empty on rank 0."""
        return f"rank {self.rank}: " if self.rank else ""

    def device(self, device: torch.device) -> torch.device:
        """This process's device: CUDA device LOCAL_RANK under torchrun (one GPU per process), else ``device``."""
        if not self.distributed or device.type != "cuda":
            return device
        if device.index is not None and device.index != self.local_rank:
            raise ValueError(
                f"device={device} names one GPU, but under torchrun each process uses the GPU of its LOCAL_RANK "
                f"(here cuda:{self.local_rank}); pass device=cuda or device=auto"
            )
        return torch.device("cuda", self.local_rank)

    def wrap(self, module: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
        """``module`` in DistributedDataParallel (gradients averaged over the ranks) when distributed, else itself.

        ``find_unused``: some parameters may get no gradient in a step (an instruction policy's null embedding when no
        row of the batch is dropped, the pooled-only or tokens-only parts of a text encoder); DDP then looks for them.
        """
        if not self.distributed:
            return module
        # A kernel-1 convolution's weight gradient has an arbitrary stride on its size-1 axis, which DDP reports.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(
            module, device_ids=ids, gradient_as_bucket_view=True, find_unused_parameters=find_unused
        )

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (pickled; for setup state, not per-step tensors)."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order (pickled)."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def max(self, value: int, device: torch.device) -> int:
        """The largest ``value`` over the ranks (e.g. a stop signal one rank received)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def from_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 and its result sent to every rank; PeerFailed on the others if it raised."""
        if not self.distributed:
            return fn()
        if self.is_main:
            try:
                result = fn()
            except BaseException:
                self.broadcast(_MainFailed())
                raise
            return self.broadcast(result)
        result = self.broadcast(None)
        if isinstance(result, _MainFailed):
            self._peer_failed()
        return result

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. collects the store); the others after it, or PeerFailed if it raised."""
        if not self.distributed:
            yield
        elif self.is_main:
            try:
                yield
            except BaseException:
                self.broadcast(False)
                raise
            self.broadcast(True)
        else:
            if not self.broadcast(None):
                self._peer_failed()
            yield

    def _peer_failed(self) -> None:
        """PeerFailed once rank 0 has exited, so torchrun reports rank 0 (which said why) as the failure."""
        try:
            dist.barrier()  # rank 0 never comes: its closed connection (or torchrun stopping us) ends the wait
        except RuntimeError:
            pass
        raise PeerFailed("rank 0 failed before training started")


@contextmanager
def process_group(world: World, device: torch.device, timeout_s: float) -> Iterator[None]:
    """Join torchrun's process group for ``device`` (NCCL on CUDA, gloo otherwise) for the block; no-op alone."""
    if not world.distributed:
        yield
        return
    options: dict[str, Any] = {"timeout": timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        options["device_id"] = torch.device("cuda", world.local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **options)
    try:
        yield
    finally:
        dist.destroy_process_group()


@dataclass(frozen=True)
class BatchShard:
    """Rows [start, stop) of a global batch of ``size`` rows: this rank's part (every rank holds as many)."""

    size: int
    start: int
    stop: int

    @classmethod
    def of(cls, world: World, batch_size: int) -> BatchShard:
        """Rank r's rows of a global batch of ``batch_size`` (divisible by the world size)."""
        if batch_size % world.size:
            raise ValueError(f"batch_size={batch_size} is not divisible by the world size {world.size}")
        rows = batch_size // world.size
        return cls(batch_size, world.rank * rows, (world.rank + 1) * rows)

    @property
    def rows(self) -> int:
        """Rows this rank holds."""
        return self.stop - self.start

    def take(self, draw: Callable[[int], Tensor], n: int, blocks: int = 1) -> Tensor:
        """This shard's ``n`` values of ``draw(count)`` made for the global batch.

        The local values are ``blocks`` equal groups (e.g. cameras), each row-major over this shard's rows
        (n / (blocks * rows) values per row), as the global draw's are over the global batch's rows.
        """
        per_row = n // (blocks * self.rows)
        values = draw(blocks * self.size * per_row).unflatten(0, (blocks, self.size * per_row))
        return values[:, self.start * per_row : self.stop * per_row].flatten(0, 1)

    def gather(self, local: Tensor) -> Tensor:
        """(size, ...) from every rank's (rows, ...) in rank order; gradients flow back to each rank's rows."""
        return _GatherRows.apply(local, self.start, self.stop)

    def whole_batch(self, denoise: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """A bound denoiser seen as one over the global batch: it runs on this shard's rows, outputs are gathered.

        Every rank then holds the same global loss; DDP averages the ranks' gradients of it, and the gather's
        backward sums the ranks' gradients of each row, so the update is the global loss's own gradient. Calls on
        the first n rows of the global batch (e.g. shortcut targets) run each rank's rows among them.
        """

        def global_denoise(x: Tensor, *per_row: Tensor) -> Tensor:  # x (n, T, Da), per_row each (n,) -> (n, T, Da)
            n = x.shape[0]
            if n > self.size:
                raise ValueError(f"the objective called the denoiser on {n} rows of a {self.size}-row global batch")
            stop = min(self.stop, n)
            if stop > self.start:
                local = denoise(x[self.start : stop], *(v[self.start : stop] for v in per_row))
            else:  # none of this rank's rows is among the first n
                local = x.new_zeros((0, *x.shape[1:]))
            padded = torch.cat([local, local.new_zeros((self.rows - len(local), *local.shape[1:]))])  # (rows, T, Da)
            return self.gather(padded)[:n]  # rank r's rows sit at [r * rows, ...): padding only past n

        return global_denoise


def global_denoiser(denoise: Callable[..., Tensor], shard: BatchShard | None) -> Callable[..., Tensor]:
    """``denoise`` itself for one process; with a shard, the denoiser over the global batch (``whole_batch``)."""
    return denoise if shard is None else shard.whole_batch(denoise)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows concatenated in rank order; backward hands each rank the sum over ranks of its rows' gradients.

    (torch.distributed.nn.functional.all_gather does the same and is deprecated; this is one all_gather forward and
    one all_reduce backward, both on gloo and NCCL.)
    """

    @staticmethod
    def forward(ctx: Any, local: Tensor, start: int, stop: int) -> Tensor:
        """(rows, ...) -> (size, ...)."""
        ctx.rows = (start, stop)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        """(size, ...) gradient on each rank -> this rank's rows of their sum over ranks."""
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        start, stop = ctx.rows
        return total[start:stop], None, None
