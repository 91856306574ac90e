"""Which prompts each process trains on, reproducibly and resumably.

All processes derive the same seeded permutation per epoch; a step consumes a block of
consecutive positions and process ``r`` of ``W`` takes the r-th contiguous slice. A prompt's G
completions are generated, scored and normalised on the process that owns the prompt, so group
statistics are exact under DDP with no gathering. ``position`` (prompts consumed, globally) is
the whole sampler state, saved in checkpoints.
"""

from __future__ import annotations

import hashlib

import numpy as np


class PromptSampler:
    def __init__(
        self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ):
        if size <= 0:
            raise ValueError("the training data is empty")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.position = 0
        self._epoch, self._order = -1, np.arange(size)

    def _index_at(self, position: int) -> int:
        epoch = position // self.size
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = (
                np.random.default_rng([self.seed, epoch]).permutation(self.size)
                if self.shuffle
                else np.arange(self.size)
            )
        return int(self._order[position % self.size])

    def take(self, global_count: int) -> list[tuple[int, int]]:
        """Consume ``global_count`` positions; return this process's ``(position, index)`` pairs."""
        if global_count % self.world_size:
            raise ValueError(
                f"{global_count} prompts cannot be split evenly over {self.world_size} processes"
            )
        share = global_count // self.world_size
        start = self.position + self.rank * share
        self.position += global_count
        return [(p, self._index_at(p)) for p in range(start, start + share)]

    def generation_seed(self, position: int) -> int:
        """A seed for one prompt occurrence, independent of process count and batching."""
        digest = hashlib.sha256(f"{self.seed}:{position}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])
