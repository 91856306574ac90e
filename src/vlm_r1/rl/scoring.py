"""Score a rollout with the configured reward terms: total = sum of weight x reward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.rewards import RewardSpec, call_reward, resolve_reward
from vlm_r1.rewards.registry import declared_methods
from vlm_r1.rl.rollout import Rollout


@dataclass(frozen=True)
class WeightedReward:
    label: str
    weight: float
    spec: RewardSpec


def build_rewards(terms: list[Any]) -> list[WeightedReward]:
    """``RewardTerm`` configs -> resolved reward functions (labels made unique).

    The ``accuracy`` dispatcher runs the method each sample's data names; it is bound to the
    custom rewards and judge that the config itself declares, and refuses anything else.
    """
    declared = sorted(declared_methods(terms))
    out, seen = [], set()
    for term in terms:
        label = term.name if term.name not in seen else f"{term.name}_{len(seen)}"
        seen.add(label)
        params = dict(term.params)
        if term.name == "accuracy" and declared:
            params.setdefault("allowed_methods", declared)
        out.append(WeightedReward(label, float(term.weight), resolve_reward(term.name, **params)))
    return out


def reward_context(rollout: Rollout) -> dict[str, list[Any]]:
    rows = [rollout.prompt_of(i) for i in range(len(rollout.texts))]
    return {
        "box_spaces": [p.box_space for p in rows],
        "image_sizes": [p.image_size for p in rows],
        "task": [p.sample.task for p in rows],
        "accu_reward_method": [p.sample.reward_method for p in rows],
        "completion_lengths": rollout.lengths.tolist(),
    }


def score(
    rewards: list[WeightedReward], rollout: Rollout
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[dict]]:
    """``total [N]``, per-term scores ``{label: [N]}``, and per-completion details."""
    ctx = reward_context(rollout)
    solutions = [rollout.prompt_of(i).sample.solution for i in range(len(rollout.texts))]
    per_term: dict[str, torch.Tensor] = {}
    details: list[dict] = [{} for _ in rollout.texts]
    total = torch.zeros(len(rollout.texts))
    for reward in rewards:
        out = call_reward(reward.spec, rollout.texts, solutions, **ctx)
        values = torch.tensor(out.scores, dtype=torch.float32)
        per_term[reward.label] = values
        total += reward.weight * values
        for d, extra in zip(details, out.details, strict=True):
            if extra:
                d[reward.label] = extra
    return total, per_term, details
