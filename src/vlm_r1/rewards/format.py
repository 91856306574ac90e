"""Format rewards: did the completion use the think/answer protocol?

Every check runs in linear time (string search, not backtracking regexes), so a megabyte of
repeated tags cannot stall a training step.
"""

from __future__ import annotations

import re
from typing import Any

from vlm_r1.rewards.registry import register_reward

_THINK_TO_ANSWER = re.compile(r"</think>\s*<answer>")
# A box as VLM-R1's REC format reward accepts it: four unsigned integers, spaces only after the
# commas. No nested quantifiers, so each attempt fails or ends at the first character that
# cannot continue it.
_REC_BOX = re.compile(r"\[\d+,\s*\d+,\s*\d+,\s*\d+\]")


def is_strict_format(text: str) -> bool:
    """VLM-R1 / DeepSeek-R1 format: the whole (stripped) completion matches
    ``<think>.*?</think>\\s*<answer>.*?</answer>`` (DOTALL)."""
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    joint = _THINK_TO_ANSWER.search(text, len("<think>"))
    return joint is not None and joint.end() <= len(text) - len("</answer>")


def is_rec_format(text: str) -> bool:
    """VLM-R1's REC format check (``format_reward_rec`` in om-ai-lab/VLM-R1,
    ``src/open-r1-multimodal/src/open_r1/vlm_modules/qwen_module.py``): ``re.search`` with
    DOTALL of ``<think>.*?</think>\\s*<answer>.*?\\{.*\\[\\d+,\\s*\\d+,\\s*\\d+,\\s*\\d+\\].*\\}.*?</answer>``.

    So: a think block, then (whitespace only) an answer block, in which a ``{`` comes before a
    box of four unsigned integers ``[x1, y1, x2, y2]`` that a ``}`` and then ``</answer>``
    follow, e.g. ``{"bbox_2d": [12, 40, 80, 96], "label": "cat"}``. Like VLM-R1 it checks
    that shape, not that the JSON parses, and it is a search: text before ``<think>`` or
    after ``</answer>`` is allowed. A bare ``[12, 40, 80, 96]`` (no object around it) fails.

    Each part is found at its earliest position after the previous one, which decides whether
    the regex matches anywhere (every later part only needs to come after the one before),
    in linear time."""
    start = text.find("<think>")
    if start < 0:
        return False
    joint = _THINK_TO_ANSWER.search(text, start + len("<think>"))
    if joint is None:
        return False
    brace = text.find("{", joint.end())
    if brace < 0:
        return False
    box = _REC_BOX.search(text, brace + 1)
    if box is None:
        return False
    close = text.find("}", box.end())
    return close >= 0 and text.find("</answer>", close + 1) >= 0


def is_lenient_format(text: str) -> bool:
    """A think block, then (anywhere later) an answer block."""
    position = 0
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        position = text.find(tag, position)
        if position < 0:
            return False
        position += len(tag)
    return True


@register_reward("format")
def format_reward(completions: list[str], solutions: list[Any], **ctx: Any) -> list[float]:
    """1 if the completion is exactly ``<think>...</think>`` then ``<answer>...</answer>``."""
    return [1.0 if is_strict_format(c) else 0.0 for c in completions]


@register_reward("format_lenient")
def format_lenient(completions: list[str], solutions: list[Any], **ctx: Any) -> list[float]:
    """1 if a think block is followed (anywhere later) by an answer block."""
    return [1.0 if is_lenient_format(c) else 0.0 for c in completions]


@register_reward("format_rec")
def format_rec(completions: list[str], solutions: list[Any], **ctx: Any) -> list[float]:
    """VLM-R1's REC format reward (its ``format_reward_rec``): 1 if a think block is followed
    by an answer block holding a JSON-looking object with an integer box, e.g.
    ``<think>...</think><answer>{"bbox_2d": [12, 40, 80, 96]}</answer>`` (see
    :func:`is_rec_format`)."""
    return [1.0 if is_rec_format(c) else 0.0 for c in completions]
