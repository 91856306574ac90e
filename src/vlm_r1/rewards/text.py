"""Free-text answers: fuzzy similarity and exact set match."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from rapidfuzz import fuzz

from vlm_r1.parsing import MAX_ANSWER_CHARS, lenient_json, solution_text
from vlm_r1.rewards.common import answer_texts
from vlm_r1.rewards.registry import register_reward

_PUNCT = re.compile(r"[^\w\s]")
_SEPARATORS = re.compile(r"[,;\n]|\band\b")


def clean_text(text: str | None) -> str:
    """Lower-case, punctuation-free, single-spaced text (VLM-R1's ``clean_text`` in spirit)."""
    if not text:
        return ""
    return " ".join(_PUNCT.sub(" ", text[:MAX_ANSWER_CHARS].lower()).split())


@register_reward("fuzzy_text")
def fuzzy_text(
    completions: list[str], solutions: list[Any], *, require_answer_tag: bool = False, **ctx: Any
) -> list[float]:
    """Normalised Levenshtein similarity (rapidfuzz ``ratio`` / 100) of cleaned texts."""
    return [
        fuzz.ratio(clean_text(answer), clean_text(solution_text(solution))) / 100.0
        for answer, solution in zip(
            answer_texts(completions, require_answer_tag), solutions, strict=True
        )
    ]


def answer_items(text: str | None) -> Counter[str]:
    """The items of an answer: a JSON list's elements, else comma/semicolon/'and'-separated parts."""
    if not text or len(text) > MAX_ANSWER_CHARS:
        return Counter()
    data = lenient_json(text) if text.lstrip().startswith("[") else None
    parts = [str(x) for x in data] if isinstance(data, list) else _SEPARATORS.split(text)
    return Counter(c for c in (clean_text(p) for p in parts) if c)


@register_reward("all_match")
def all_match(
    completions: list[str], solutions: list[Any], *, require_answer_tag: bool = False, **ctx: Any
) -> list[float]:
    """1 if the answer lists exactly the solution's items (order-free, with multiplicity)."""
    out = []
    for answer, solution in zip(
        answer_texts(completions, require_answer_tag), solutions, strict=True
    ):
        gold = answer_items(solution_text(solution))
        out.append(1.0 if gold and answer_items(answer) == gold else 0.0)
    return out
