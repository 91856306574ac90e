"""Score a rollout with the configured reward terms: total = sum of weight x reward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.rewards import RewardConfigError, RewardSpec, call_reward, resolve_reward
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
    for i, term in enumerate(terms):
        label = term.name if term.name not in seen else f"{term.name}_{len(seen)}"
        seen.add(label)
        params = dict(term.params)
        if term.name == "accuracy" and declared:
            params.setdefault("allowed_methods", declared)
        try:
            spec = resolve_reward(term.name, **params)
            if isinstance(params.get("method"), str):  # the dispatcher's fallback reward
                resolve_reward(params["method"])
        except RewardConfigError as err:
            raise RewardConfigError(f"rewards[{i}]: {err}") from err
        out.append(WeightedReward(label, float(term.weight), spec))
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


@dataclass
class ScoredRollout:
    """A rollout with its rewards: the unit that sampling rounds filter and join."""

    rollout: Rollout
    rewards: torch.Tensor  # [N] weighted total
    per_term: dict[str, torch.Tensor]  # {reward label: [N]}
    details: list[dict]  # [N] per-completion details (parse status, matches...)

    @property
    def num_groups(self) -> int:
        return len(self.rollout.prompts)

    def select_groups(self, keep: torch.Tensor) -> ScoredRollout:
        """The groups flagged in ``keep`` ``[B]`` (bool), every field alike."""
        rows = self.rollout.group_rows(keep)
        return ScoredRollout(
            self.rollout.select_groups(keep),
            self.rewards[rows],
            {k: v[rows] for k, v in self.per_term.items()},
            [self.details[i] for i in rows.tolist()],
        )

    def first_groups(self, count: int) -> ScoredRollout:
        keep = torch.zeros(self.num_groups, dtype=torch.bool)
        keep[:count] = True
        return self.select_groups(keep)

    @classmethod
    def cat(cls, parts: Sequence[ScoredRollout]) -> ScoredRollout:
        """Several scored rollouts as one (groups in order)."""
        return cls(
            Rollout.cat([p.rollout for p in parts]),
            torch.cat([p.rewards for p in parts]),
            {k: torch.cat([p.per_term[k] for p in parts]) for k in parts[0].per_term},
            [d for p in parts for d in p.details],
        )


def score(rewards: list[WeightedReward], rollout: Rollout) -> ScoredRollout:
    """Every reward term on every completion: total ``[N]``, per-term ``{label: [N]}``, and
    per-completion details."""
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
    return ScoredRollout(rollout, total, per_term, details)
