"""LLM-as-judge reward against any OpenAI-compatible ``/chat/completions`` endpoint.

The judge is asked to output a single number in [0, 1]. Network trouble never stops training:
each request has a timeout and ``retries``; when all fail (or the reply holds no number) the
sample gets the ``fallback`` score: ``"exact"`` (1 if the cleaned answer equals the cleaned
solution, VLM-R1's fallback) or a fixed number. The endpoint comes from the config or the
``OPENAI_API_BASE`` / ``OPENAI_API_KEY`` environment variables, read when the reward is called
(no client is created at import time).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from vlm_r1.parsing import parse_number, solution_text
from vlm_r1.rewards.common import answer_texts
from vlm_r1.rewards.registry import RewardOutput, register_reward
from vlm_r1.rewards.text import clean_text

logger = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You are grading a student's answer. Compare the student's final answer with the correct "
    "solution. Reply with only a number between 0 and 1: 1 if they match in meaning, 0 if "
    "not, a value in between for partial credit.\n\nStudent's answer: {answer}\nCorrect solution: "
    "{solution}\nScore:"
)


def _ask(
    client: httpx.Client, url: str, model: str, prompt: str, retries: int, backoff: float
) -> float | None:
    for attempt in range(retries + 1):
        try:
            response = client.post(
                url,
                json={
                    "model": model,
                    "temperature": 0.0,
                    "messages": [{"role": "user", "content": prompt}],
                },
            )
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
            value = parse_number(str(content))
            if value is not None:
                return min(1.0, max(0.0, value))
            logger.warning("judge reply has no number: %r", str(content)[:100])
            return None
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as err:
            logger.warning("judge request %d/%d failed: %s", attempt + 1, retries + 1, err)
            if attempt < retries:
                time.sleep(backoff * (2**attempt))
    return None


@register_reward("llm_judge")
def llm_judge(
    completions: list[str],
    solutions: list[Any],
    *,
    base_url: str | None = None,
    model: str = "gpt-4o-mini",
    api_key: str | None = None,
    timeout: float = 30.0,
    retries: int = 2,
    backoff: float = 0.5,
    fallback: str | float = "exact",
    max_workers: int = 8,
    require_answer_tag: bool = False,
    **ctx: Any,
) -> RewardOutput:
    """A judge model's score in [0, 1]; see the module docstring for failure handling."""
    base = (base_url or os.environ.get("OPENAI_API_BASE") or "https://api.openai.com/v1").rstrip(
        "/"
    )
    key = api_key or os.environ.get("OPENAI_API_KEY", "")
    answers = answer_texts(completions, require_answer_tag)
    golds = [solution_text(s) for s in solutions]
    prompts = [
        JUDGE_PROMPT.format(answer=(a or "")[:4000], solution=g[:4000])
        for a, g in zip(answers, golds, strict=True)
    ]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with (
        httpx.Client(timeout=timeout, headers=headers) as client,
        ThreadPoolExecutor(max(1, max_workers)) as pool,
    ):
        judged = list(
            pool.map(
                lambda p: _ask(client, f"{base}/chat/completions", model, p, retries, backoff),
                prompts,
            )
        )
    scores, details = [], []
    for value, answer, gold in zip(judged, answers, golds, strict=True):
        if value is None:
            fallback_score = (
                float(clean_text(answer) == clean_text(gold) and bool(gold))
                if fallback == "exact"
                else float(fallback)
            )
            scores.append(fallback_score)
            details.append({"judge": "fallback"})
        else:
            scores.append(value)
            details.append({"judge": "ok"})
    return RewardOutput(scores, details)
