"""No completion string may crash a reward or produce a non-finite / out-of-range score."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rewards import REWARDS, call_reward, resolve_reward, reward_names

# The judge points at a closed local port with no retries: it must fall back, fast.
PARAMS = {"llm_judge": {"base_url": "http://127.0.0.1:9", "retries": 0, "timeout": 0.5}}
SOLUTIONS = [
    {"boxes": [[10, 10, 50, 60]], "labels": ["red circle"]},
    '```json\n[{"bbox_2d": [3, 4, 80, 90], "label": "star"}, {"bbox_2d": [5, 5, 9, 9], "label": "cat"}]\n```',
    "<answer>42</answer>",
    "B",
    "yes",
    "a red car",
    "\\frac{1}{2}",
    "",
]
CTX = {
    "box_spaces": [BoxSpace("norm1000", (97, 131))],
    "image_sizes": [(97, 131)],
    "accu_reward_method": ["odLength"],
}

NASTY = [
    "",
    "<answer>",
    "</answer><answer>",
    "<think><think><answer>" * 1000,
    "<answer>" + "[" * 5000 + "</answer>",
    "<answer>" + "{" * 3000 + "</answer>",
    "<answer>[NaN, Infinity, -Infinity, 1e309]</answer>",
    "<answer>[" + ", ".join(["[1,2,3,4]"] * 2000) + "]</answer>",
    "<answer>" + "9" * 5000 + "</answer>",
    "<think>" + "x" * 1_000_000,
    "<answer>" + "1, " * 300_000 + "</answer>",
    "\x00\ud7ff\U0010ffff" * 100,
    '<answer>[{"bbox_2d": "1,2,3,4"}, {"bbox_2d": [true, false, null, 1]}]</answer>',
    "<answer>\\frac{\\frac{\\frac{1}{2}}{3}}{" * 200 + "</answer>",
    "<think>a</think><answer>" + "yes no " * 10000 + "</answer>",
]

completion_text = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda a, b: f"<think>{a}</think><answer>{b}</answer>",
        st.text(max_size=80),
        st.text(max_size=200),
    ),
    st.builds(
        lambda xs: "<answer>" + str(xs) + "</answer>",
        st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=5)), max_size=8),
    ),
    st.sampled_from(NASTY),
)


def _check(name, completion, solution):
    params = PARAMS.get(name, {})
    spec = resolve_reward(name, **params)
    out = call_reward(spec, [completion], [solution], **CTX)
    assert len(out.scores) == 1
    value = out.scores[0]
    assert isinstance(value, float) and math.isfinite(value)
    assert REWARDS[spec.name].low - 1e-9 <= value <= REWARDS[spec.name].high + 1e-9, (name, value)


@pytest.mark.parametrize("name", reward_names())
def test_nasty_strings(name):
    for completion in NASTY:
        for solution in SOLUTIONS:
            _check(name, completion, solution)


@pytest.mark.parametrize("name", reward_names())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    completion=completion_text, solution=st.one_of(st.sampled_from(SOLUTIONS), st.text(max_size=50))
)
def test_arbitrary_text(name, completion, solution):
    _check(name, completion, solution)
