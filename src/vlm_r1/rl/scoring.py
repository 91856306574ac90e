"""Score a rollout with the configured reward terms: total = sum of weight x reward."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.rewards import RewardConfigError, RewardSpec, call_reward, resolve_reward
from vlm_r1.rewards.registry import declared_methods
from vlm_r1.rl.rollout import Rollout

logger = logging.getLogger(__name__)


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


#: The keys every reward's context has, in order; a row's extra field with one of these names
#: (or a name of the positional arguments) is reachable only through ``meta``.
STANDARD_KEYS: tuple[str, ...] = (
    "image_paths",
    "image_sizes",
    "problem",
    "prompts",
    "task",
    "accu_reward_method",
    "box_spaces",
    "image_box_spaces",
    "completion_lengths",
    "sample_id",
    "meta",
)
RESERVED_KEYS = frozenset({*STANDARD_KEYS, "completions", "solutions", "solution"})

_namespaced_warned: set[str] = set()


def reward_context(rollout: Rollout) -> dict[str, list[Any]]:
    """What every reward receives besides completions and solutions: one list per key, one
    entry per completion (row ``i`` is completion ``i``; the G completions of a prompt repeat
    its values). Paths, not decoded images, so the context costs nothing to build; a reward
    that needs pixels opens them (``examples/rewards/box_on_object.py``).

    ====================== ============================================================
    key                    per completion
    ====================== ============================================================
    ``image_paths``        the sample's image files (``list[str]``; VLM-R1's
                           ``image_path``), relative ones already joined to the image folder
    ``image_sizes``        ``(width, height)`` of the first image, or ``None`` (no image)
    ``problem``            the question, without ``<image>`` placeholders (VLM-R1's name)
    ``prompts``            the chat-templated prompt string the model was given (TRL's name)
    ``task``               ``rec``, ``ovd``, ``count`` or ``qa``
    ``accu_reward_method`` the row's reward method, or ``None``
    ``box_spaces``         the first image's ``models.boxes.BoxSpace`` (how this model writes
                           boxes), or ``None``; ``models.boxes.from_model(boxes, space)`` maps
                           predicted boxes to original pixels, and
                           ``rewards.common.predicted_boxes(completion, space)`` parses and maps
    ``image_box_spaces``   every image's ``BoxSpace`` in prompt order (a tuple; one entry for
                           a single-image sample): multi-image answers name their image
                           (``"image": k``, from 1); ``predicted_boxes(completion, spaces)``
                           maps each box with its own image's space
    ``completion_lengths`` the completion's length in tokens
    ``sample_id``          the row's ``id`` (``file:line`` when it has none)
    ``meta``               a dict of every extra field of the row (a copy per completion)
    *extra field*          each extra field of the row, under its own name (TRL and VLM-R1
                           pass dataset columns so); ``None`` for rows without it
    ====================== ============================================================

    Extra fields are a row's keys the reader does not use itself (``Sample.meta``): a JSONL row
    ``{"image": ..., "conversations": ..., "difficulty": 3}`` gives ``difficulty=[3, ...]``. An
    extra field named like a standard key or ``completions``/``solutions``/``solution``
    (``RESERVED_KEYS``) does not replace it: it is only in ``meta`` (a warning says so once per
    name). Data is untrusted, so context never fills a reward parameter that has a default
    (``rewards.registry.call_arguments``): a row cannot change a reward's settings. A key is
    present when any row of the batch has the field, so a reward reading a field that some
    files lack should take ``**kwargs`` and use ``kwargs.get``.
    """
    rows = [rollout.prompt_of(i) for i in range(len(rollout.texts))]
    ctx: dict[str, list[Any]] = {
        "image_paths": [list(p.sample.images) for p in rows],
        "image_sizes": [p.image_size for p in rows],
        "problem": [p.sample.question for p in rows],
        "prompts": [p.chat_text for p in rows],
        "task": [p.sample.task for p in rows],
        "accu_reward_method": [p.sample.reward_method for p in rows],
        "box_spaces": [p.box_space for p in rows],
        "image_box_spaces": [p.spaces() for p in rows],
        "completion_lengths": rollout.lengths.tolist(),
        "sample_id": [p.sample.id for p in rows],
        "meta": [dict(p.sample.meta) for p in rows],
    }
    metas = [p.sample.meta for p in rows]
    for name in extra_field_names(metas):
        ctx[name] = [meta.get(name) for meta in metas]
    return ctx


def extra_field_names(metas: Sequence[dict[str, Any]]) -> list[str]:
    """The extra fields that get their own context key: every name in any row, first seen
    first, except ``RESERVED_KEYS`` (kept only in ``meta``, with a warning once per name)."""
    names = dict.fromkeys(k for meta in metas for k in meta if isinstance(k, str))
    clashing = [k for k in names if k in RESERVED_KEYS]
    for name in clashing:
        if name not in _namespaced_warned:
            _namespaced_warned.add(name)
            logger.warning(
                "data field %r has the name of a standard reward-context key: rewards get it "
                "only as meta[i][%r]",
                name,
                name,
            )
    return [k for k in names if k not in RESERVED_KEYS]


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
