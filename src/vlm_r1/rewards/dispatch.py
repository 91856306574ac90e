"""Per-sample reward selection: VLM-R1's ``default`` chain and the ``accuracy`` dispatcher
(which runs only the per-sample methods the config allows: data cannot pick code to run)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from vlm_r1.parsing import parse_choice, parse_number, solution_text
from vlm_r1.rewards.common import answer_texts, ctx_item
from vlm_r1.rewards.math import math_equal, numbers_close
from vlm_r1.rewards.registry import (
    VLM_R1_METHODS,
    RewardOutput,
    call_reward,
    check_data_method,
    register_reward,
    resolve_reward,
)
from vlm_r1.rewards.text import clean_text, fuzz

_HAS_DIGIT = re.compile(r"\d")
#: The method a sample of these tasks gets when neither its row nor the config names one
#: (``default``'s text similarity means nothing for a click).
TASK_METHODS = {"point": "point_in_box"}


def default_score(answer: str | None, gold: str) -> float:
    """VLM-R1's ``default`` accuracy: math-verify, else numeric (if the gold has digits),
    else multiple choice (if the gold is a letter choice), else fuzzy text similarity."""
    if answer is None:
        return 0.0
    if math_equal(answer, gold):
        return 1.0
    if _HAS_DIGIT.search(gold):
        value, expected = parse_number(answer), parse_number(gold)
        if value is not None and expected is not None:
            return 1.0 if numbers_close(value, expected, 0.0, 0.0) else 0.0
        return fuzz.ratio(clean_text(answer), clean_text(gold)) / 100.0
    choice = parse_choice(gold) if len(gold.strip()) <= 3 else None
    if choice is not None:
        return 1.0 if parse_choice(answer) == choice else 0.0
    return fuzz.ratio(clean_text(answer), clean_text(gold)) / 100.0


@register_reward("default")
def default(
    completions: list[str], solutions: list[Any], *, require_answer_tag: bool = False, **ctx: Any
) -> list[float]:
    """VLM-R1's default accuracy chain (see ``default_score``)."""
    return [
        default_score(answer, solution_text(solution))
        for answer, solution in zip(
            answer_texts(completions, require_answer_tag), solutions, strict=True
        )
    ]


def _sample_method(ctx: dict[str, Any], i: int, method: str) -> str:
    """The row's own method; else, when the config left ``method`` at ``default``, the task's
    (``TASK_METHODS``); else the config's."""
    own = ctx_item(ctx, "accu_reward_method", i, None)
    if own:
        return own
    task = ctx_item(ctx, "task", i, None)
    if method == "default" and isinstance(task, str):
        return TASK_METHODS.get(task, method)
    return method


@register_reward("accuracy")
def accuracy(
    completions: list[str],
    solutions: list[Any],
    *,
    method: str = "default",
    allowed_methods: Collection[str] = (),
    **ctx: Any,
) -> RewardOutput:
    """The accuracy reward each sample asks for: ``ctx["accu_reward_method"][i]`` (from the
    data, VLM-R1 names accepted), else ``method`` (a ``point`` sample: ``point_in_box`` while
    ``method`` is ``default``). Samples are grouped by method so vectorised
    rewards (AP over the batch) run once per method.

    A sample's method comes from untrusted data: besides ``method`` (the config's own) it may be
    only what ``check_data_method`` accepts with ``allowed_methods`` (bound from the config's
    ``declared_methods``); anything else raises ``RewardNotAllowed`` before any import. The
    reader already rejects such rows; this is the second line of defence."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in range(len(completions)):
        groups[_sample_method(ctx, i, method)].append(i)
    for name in groups:
        if VLM_R1_METHODS.get(name, name) != VLM_R1_METHODS.get(method, method):
            check_data_method(name, allowed_methods)
    scores = [0.0] * len(completions)
    details: list[dict[str, Any]] = [{} for _ in completions]
    for name, idx in groups.items():
        spec = resolve_reward(name)
        sub_ctx = {
            k: [v[i] for i in idx]
            if isinstance(v, (list, tuple)) and len(v) == len(completions)
            else v
            for k, v in ctx.items()
        }
        out = call_reward(
            spec, [completions[i] for i in idx], [solutions[i] for i in idx], **sub_ctx
        )
        for j, i in enumerate(idx):
            scores[i] = out.scores[j]
            details[i] = {**out.details[j], "method": spec.name}
    return RewardOutput(scores, details)
