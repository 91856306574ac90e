"""Group-relative advantages (pure: torch only).

GRPO (Shao et al. 2024, DeepSeekMath, eq. 3): for the G rewards ``r`` of one prompt,
``A_i = (r_i - mean(r)) / (std(r) + eps)``, the same for every token of completion i.
Variants, chosen by ``scale_rewards``:

* ``group``: the GRPO formula above (std over the group, unbiased as in TRL);
* ``batch``: subtract the group mean, divide by the std of all rewards in the *global* batch,
  every process's (Hu et al. 2025, REINFORCE++ / TRL ``scale_rewards="batch"``, which takes the
  std of the gathered rewards), robust for near-constant groups;
* ``none``: only subtract the group mean (Liu et al. 2025, Dr. GRPO: std scaling biases towards
  easy and hard questions).

A group whose rewards are all equal gets zero advantage in every variant.

Every entry of ``ADVANTAGES`` has the signature ``fn(rewards, group_size, global_rewards=None)``:
``rewards`` are this process's (whole groups), ``global_rewards`` those of all processes
(``None``: this process's are the whole batch). Only batch-level statistics read the latter,
so the advantages do not depend on how the batch is split over processes; ``step_advantages``
is what the trainer calls, with its accelerator doing the gather.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

EPS = 1e-4


class AdvantageFn(Protocol):
    def __call__(
        self, rewards: torch.Tensor, group_size: int, global_rewards: torch.Tensor | None = None
    ) -> torch.Tensor: ...


ADVANTAGES: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    def wrap(fn: AdvantageFn) -> AdvantageFn:
        ADVANTAGES[name] = fn
        return fn

    return wrap


def _centered(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of {group_size} entries, got {tuple(rewards.shape)}"
        )
    grouped = rewards.view(-1, group_size)  # [B, G]
    return grouped, grouped - grouped.mean(dim=1, keepdim=True)


@register_advantage("group")
def group_normalised(
    rewards: torch.Tensor, group_size: int, global_rewards: torch.Tensor | None = None
) -> torch.Tensor:
    """``(r - group mean) / (group std + eps)`` -> ``[B*G]`` (groups are local: no global use)."""
    grouped, centered = _centered(rewards, group_size)
    return (centered / (grouped.std(dim=1, keepdim=True) + EPS)).reshape(-1)


@register_advantage("batch")
def batch_normalised(
    rewards: torch.Tensor, group_size: int, global_rewards: torch.Tensor | None = None
) -> torch.Tensor:
    """``(r - group mean) / (std(global batch) + eps)`` -> ``[B*G]``.

    The std is the unbiased one over every reward of the global batch (``global_rewards``, all
    processes'; default: ``rewards``), as TRL computes it after gathering, so the result does
    not depend on the number of processes.
    """
    _, centered = _centered(rewards, group_size)
    everything = (rewards if global_rewards is None else global_rewards).reshape(-1)
    std = everything.std() if everything.numel() > 1 else everything.new_zeros(())
    return (centered / (std.to(centered.dtype) + EPS)).reshape(-1)


@register_advantage("none")
def mean_centered(
    rewards: torch.Tensor, group_size: int, global_rewards: torch.Tensor | None = None
) -> torch.Tensor:
    """``r - group mean`` (Dr. GRPO) -> ``[B*G]``."""
    return _centered(rewards, group_size)[1].reshape(-1)


def step_advantages(
    fn: AdvantageFn, rewards: torch.Tensor, group_size: int, accelerator: Any = None
) -> torch.Tensor:
    """This process's advantages, with batch statistics over every process's rewards.

    ``accelerator`` (an ``accelerate.Accelerator``, or anything with ``num_processes``,
    ``device`` and ``gather``) all-gathers ``rewards``; every process must call this with the
    same number of rewards (the trainer keeps the same number of groups on every process). With
    one process, or none given, the local rewards are the global batch.
    """
    global_rewards = None
    if accelerator is not None and accelerator.num_processes > 1:
        gathered = accelerator.gather(rewards.detach().to(accelerator.device))
        global_rewards = gathered.to(rewards.device)
    return fn(rewards, group_size, global_rewards=global_rewards)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[B]`` bool: groups whose rewards are all equal (no learning signal)."""
    grouped = rewards.view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values).abs() < 1e-12
