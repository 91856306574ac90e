"""Format rewards: did the completion use the think/answer protocol?

Both checks run in linear time (string search, not backtracking regexes), so a megabyte of
repeated tags cannot stall a training step.
"""

from __future__ import annotations

import re
from typing import Any

from vlm_r1.rewards.registry import register_reward

_THINK_TO_ANSWER = re.compile(r"</think>\s*<answer>")


def is_strict_format(text: str) -> bool:
    """VLM-R1 / DeepSeek-R1 format: the whole (stripped) completion matches
    ``<think>.*?</think>\\s*<answer>.*?</answer>`` (DOTALL)."""
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    joint = _THINK_TO_ANSWER.search(text, len("<think>"))
    return joint is not None and joint.end() <= len(text) - len("</answer>")


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
