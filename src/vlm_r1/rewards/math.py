"""Numeric answers: exact math (math-verify), numbers with tolerance, object counts."""

from __future__ import annotations

import logging
import threading
from typing import Any

from vlm_r1.parsing import MAX_ANSWER_CHARS, parse_number, solution_text
from vlm_r1.rewards.common import answer_texts
from vlm_r1.rewards.registry import register_reward

logger = logging.getLogger(__name__)


def math_equal(answer: str | None, gold: str) -> bool:
    """math-verify's symbolic equivalence; False on anything it cannot parse or verify.

    math-verify's timeouts use SIGALRM, which only works on the main thread, so they are
    disabled elsewhere (e.g. reward workers in threads).
    """
    if not answer or len(answer) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    from math_verify import parse, verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(gold, parsing_timeout=timeout)
        answer_parsed = parse(answer, parsing_timeout=timeout)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=timeout))
    except Exception as err:  # math-verify/sympy raise many types on odd input
        logger.debug("math-verify failed on %r vs %r: %s", answer[:80], gold[:80], err)
        return False


@register_reward("math")
def math_reward(
    completions: list[str], solutions: list[Any], *, require_answer_tag: bool = False, **ctx: Any
) -> list[float]:
    """1 if the answer is mathematically equal to the solution (math-verify)."""
    return [
        1.0 if math_equal(answer, solution_text(solution)) else 0.0
        for answer, solution in zip(
            answer_texts(completions, require_answer_tag), solutions, strict=True
        )
    ]


def numbers_close(value: float | None, gold: float | None, abs_tol: float, rel_tol: float) -> bool:
    if value is None or gold is None:
        return False
    return abs(value - gold) <= max(abs_tol, rel_tol * abs(gold))


@register_reward("numeric")
def numeric(
    completions: list[str],
    solutions: list[Any],
    *,
    abs_tol: float = 0.0,
    rel_tol: float = 0.0,
    require_answer_tag: bool = False,
    **ctx: Any,
) -> list[float]:
    """1 if the answer's last number is within ``max(abs_tol, rel_tol * |gold|)`` of the gold."""
    return [
        1.0
        if numbers_close(
            parse_number(answer), parse_number(solution_text(solution)), abs_tol, rel_tol
        )
        else 0.0
        for answer, solution in zip(
            answer_texts(completions, require_answer_tag), solutions, strict=True
        )
    ]


@register_reward("count")
def count(
    completions: list[str],
    solutions: list[Any],
    *,
    partial: bool = False,
    require_answer_tag: bool = True,
    **ctx: Any,
) -> list[float]:
    """Object counting: 1 for the exact count; ``partial`` gives ``max(0, 1 - |err| / max(gold, 1))``."""
    out = []
    for answer, solution in zip(
        answer_texts(completions, require_answer_tag), solutions, strict=True
    ):
        value, gold = parse_number(answer), parse_number(solution_text(solution))
        if value is None or gold is None:
            out.append(0.0)
        elif partial:
            out.append(max(0.0, 1.0 - abs(round(value) - gold) / max(gold, 1.0)))
        else:
            out.append(1.0 if round(value) == gold else 0.0)
    return out
