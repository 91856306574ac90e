"""Group-relative advantages (pure: torch only).

GRPO (Shao et al. 2024, DeepSeekMath, eq. 3): for the G rewards ``r`` of one prompt,
``A_i = (r_i - mean(r)) / (std(r) + eps)``, the same for every token of completion i.
Variants, chosen by ``scale_rewards``:

* ``group``: the GRPO formula above (std over the group, unbiased as in TRL);
* ``batch``: subtract the group mean, divide by the std of all rewards in the batch
  (Hu et al. 2025, REINFORCE++ / TRL ``scale_rewards="batch"``), robust for near-constant groups;
* ``none``: only subtract the group mean (Liu et al. 2025, Dr. GRPO: std scaling biases towards
  easy and hard questions).

A group whose rewards are all equal gets zero advantage in every variant.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-4
AdvantageFn = Callable[[torch.Tensor, int], torch.Tensor]
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
def group_normalised(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(r - group mean) / (group std + eps)`` -> ``[B*G]``."""
    grouped, centered = _centered(rewards, group_size)
    return (centered / (grouped.std(dim=1, keepdim=True) + EPS)).reshape(-1)


@register_advantage("batch")
def batch_normalised(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(r - group mean) / (batch std + eps)`` -> ``[B*G]``."""
    _, centered = _centered(rewards, group_size)
    std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
    return (centered / (std + EPS)).reshape(-1)


@register_advantage("none")
def mean_centered(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``r - group mean`` (Dr. GRPO) -> ``[B*G]``."""
    return _centered(rewards, group_size)[1].reshape(-1)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[B]`` bool: groups whose rewards are all equal (no learning signal)."""
    grouped = rewards.view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values).abs() < 1e-12
