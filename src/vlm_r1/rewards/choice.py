"""Closed-form answers: multiple choice (A-E) and yes/no."""

from __future__ import annotations

from typing import Any

from vlm_r1.parsing import parse_choice, parse_yes_no, solution_text
from vlm_r1.rewards.common import answer_texts
from vlm_r1.rewards.registry import register_reward


@register_reward("mcq")
def mcq(
    completions: list[str], solutions: list[Any], *, require_answer_tag: bool = False, **ctx: Any
) -> list[float]:
    """1 if the answer's choice letter equals the solution's (last letter A-E mentioned)."""
    out = []
    for answer, solution in zip(
        answer_texts(completions, require_answer_tag), solutions, strict=True
    ):
        gold = parse_choice(solution_text(solution))
        out.append(1.0 if gold is not None and parse_choice(answer) == gold else 0.0)
    return out


@register_reward("yes_no")
def yes_no(
    completions: list[str], solutions: list[Any], *, require_answer_tag: bool = False, **ctx: Any
) -> list[float]:
    """1 if the answer's first yes/no equals the solution's."""
    out = []
    for answer, solution in zip(
        answer_texts(completions, require_answer_tag), solutions, strict=True
    ):
        gold = parse_yes_no(solution_text(solution))
        out.append(1.0 if gold is not None and parse_yes_no(answer) == gold else 0.0)
    return out
