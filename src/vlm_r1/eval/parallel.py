"""Data-parallel evaluation: each launched process generates a share of the samples, the main
process gathers the completions back into sample order and scores them as one process would.

Why the results are identical to one process, not just close: the samples are first cut into
the batches a single process would run (``batch_size`` consecutive samples each) and whole
batches are dealt to the processes. Every batch therefore has the same members, padding and
shapes as in a one-process run, so on a deterministic device each completion is bit-for-bit
the one a single process writes; scoring then runs once, on all completions in sample order.
Dealing batches round-robin (not in contiguous blocks) keeps the processes' loads even when
the sample file is sorted by task or by prompt length.

Only Python objects (the completion texts and box spaces) cross processes, once, at the end:
so the process group is gloo on CPU and GPU alike (no NCCL setup, no device placement for
the exchange). ``torchrun`` and ``accelerate launch`` both describe the launch in
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``, which is all
this needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

#: How long a process waits at the gather for the slowest one. gloo's default (30 minutes)
#: is shorter than a CPU evaluation of 2,000 samples can take; a process that fails is still
#: noticed at once, because the launcher stops all the others.
GATHER_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Processes:
    """Where this process stands in the launch (``world_size == 1``: a plain command)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_processes(env: Mapping[str, str] | None = None) -> Processes:
    """The launch as ``torchrun`` / ``accelerate launch`` describe it in the environment."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    return Processes(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])))


@contextmanager
def process_group(processes: Processes) -> Iterator[None]:
    """A gloo process group for the duration when several processes were launched; one that
    already exists (a caller's) is used and left open."""
    import torch.distributed as dist

    created = False
    if processes.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            "gloo",
            rank=processes.rank,
            world_size=processes.world_size,
            timeout=GATHER_TIMEOUT,
        )
        created = True
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def shard_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """The batches (lists of sample indices) that process ``rank`` generates: the one-process
    batches ``[0, b), [b, 2b), ...`` dealt round-robin, batch ``k`` to process ``k % world``."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"bad shard request: n={n} batch={batch_size} rank={rank}/{world_size}")
    starts = range(rank * batch_size, n, world_size * batch_size)
    return [list(range(s, min(s + batch_size, n))) for s in starts]


def merge_shards(parts: Sequence[Sequence[tuple[int, T]]], n: int) -> list[T]:
    """``(index, item)`` pairs from every process, back in index order ``0 .. n-1``.

    A missing or repeated index is a bug in the sharding, never something to score around:
    it raises instead of silently scoring fewer samples than one process would."""
    ordered: list[Any] = [None] * n
    seen = [False] * n
    for part in parts:
        for index, item in part:
            if not 0 <= index < n or seen[index]:
                raise ValueError(f"sample {index} was generated twice or is out of 0..{n - 1}")
            seen[index] = True
            ordered[index] = item
    if not all(seen):
        missing = [i for i, s in enumerate(seen) if not s]
        raise ValueError(f"no completion came back for samples {missing[:10]} (of {n})")
    return ordered


def gather_to_main(obj: T, processes: Processes) -> list[T] | None:
    """Every process's ``obj`` on the main process (in rank order), ``None`` elsewhere."""
    if processes.world_size == 1:
        return [obj]
    import torch.distributed as dist

    received: list[Any] | None = [None] * processes.world_size if processes.is_main else None
    dist.gather_object(obj, received, dst=0)
    return received


def barrier(processes: Processes) -> None:
    """Wait for every process (no-op for one), e.g. so timing starts when all have loaded."""
    if processes.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
