"""``format_rec``: VLM-R1's REC format reward (``format_reward_rec``), hand-checked cases and
agreement with VLM-R1's regex on random strings."""

import random
import re
import time

import pytest

from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rewards.format import is_rec_format

# The pattern of om-ai-lab/VLM-R1's format_reward_rec (vlm_modules/qwen_module.py), used with
# re.search and DOTALL: the oracle the linear-time check must agree with.
VLM_R1_REC = re.compile(
    r"<think>.*?</think>\s*<answer>.*?\{.*\[\d+,\s*\d+,\s*\d+,\s*\d+\].*\}.*?</answer>", re.DOTALL
)
OBJECT = '{"bbox_2d": [12, 40, 80, 96], "label": "red circle"}'


@pytest.mark.parametrize(
    "completion, expected",
    [
        # good
        (f"<think>The red one is left.</think>\n<answer>{OBJECT}</answer>", 1.0),
        ('<think>t</think><answer>```json\n[{"bbox_2d": [1,2,3,4]}]\n```</answer>', 1.0),
        (f"Sure. <think>t</think> <answer>{OBJECT}</answer> done", 1.0),  # a search, like VLM-R1
        # JSON that does not parse but has the shape still counts (VLM-R1 checks the shape)
        ('<think>t</think><answer>{"bbox_2d": [1, 2, 3, 4], "label": }</answer>', 1.0),
        # missing box
        ('<think>t</think><answer>{"label": "red circle"}</answer>', 0.0),
        ("<think>t</think><answer>the red circle</answer>", 0.0),
        # a bare box, with no object around it (VLM-R1 asks for the JSON object)
        ("<think>t</think><answer>[12, 40, 80, 96]</answer>", 0.0),
        # box outside the answer
        (f"<think>t</think><answer>red circle</answer> {OBJECT}", 0.0),
        (f"<think>{OBJECT}</think><answer>red circle</answer>", 0.0),
        (f"<think>t</think>{OBJECT}<answer>red circle</answer>", 0.0),
        # think missing or out of order
        (f"<answer>{OBJECT}</answer>", 0.0),
        (f"<think>t<answer>{OBJECT}</answer>", 0.0),
        (f"<answer>{OBJECT}</answer><think>t</think>", 0.0),
        (f"<think>t</think> so <answer>{OBJECT}</answer>", 0.0),  # text between the blocks
        # malformed JSON
        ('<think>t</think><answer>{"bbox_2d": [12, 40, 80, 96]</answer>', 0.0),  # no }
        ('<think>t</think><answer>{"bbox_2d": [12, 40, 80]}</answer>', 0.0),  # 3 numbers
        ('<think>t</think><answer>{"bbox_2d": [12.5, 40, 80, 96]}</answer>', 0.0),  # a float
        ('<think>t</think><answer>{"bbox_2d": [-12, 40, 80, 96]}</answer>', 0.0),  # negative
        ('<think>t</think><answer>{"bbox_2d": [ 12, 40, 80, 96]}</answer>', 0.0),  # "[ 12"
        ('<think>t</think><answer>{"bbox_2d": [12, 40, 80, 96}</answer>', 0.0),  # no ]
        (f"<think>t</think><answer>{OBJECT}", 0.0),  # answer never closed
    ],
)
def test_hand_checked_cases(completion, expected):
    out = call_reward(resolve_reward("format_rec"), [completion], [None])
    assert out.scores == [expected]
    assert bool(VLM_R1_REC.search(completion)) == bool(expected)  # as VLM-R1 scores it


def test_agrees_with_the_vlm_r1_regex_on_random_strings():
    rng = random.Random(0)
    tokens = [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "{",
        "}",
        "[1, 2, 3, 4]",
        "[10,20,30,40]",
        "[1, 2, 3]",
        "[ 1, 2, 3, 4]",
        "[1,\n2, 3, 4]",
        "[",
        "]",
        "7",
        ",",
        " ",
        "\n",
        "x",
    ]
    # A well-formed answer, each part then dropped, swapped or padded at random.
    skeleton = ["<think>", "x", "</think>", "\n", "<answer>", "{", "[1, 2, 3, 4]", "}", "</answer>"]
    matched = 0
    for i in range(30000):
        if i % 2:
            parts = []
            for part in skeleton:
                roll = rng.random()
                if roll < 0.12:
                    continue
                parts.append(rng.choice(tokens) if roll < 0.24 else part)
                if rng.random() < 0.15:
                    parts.append(rng.choice(tokens))
            s = "".join(parts)
        else:
            s = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 12)))
        expected = VLM_R1_REC.search(s) is not None
        matched += expected
        assert is_rec_format(s) == expected, s
    assert 1000 < matched < 14000  # both sides are exercised


def test_linear_time_on_adversarial_input():
    """VLM-R1's regex backtracks quadratically on this (measured: 0.13 s at 1,000 repeats,
    0.65 s at 2,000); the check must stay linear (20,000 repeats here)."""
    nasty = "<think></think><answer>" + "{[1, 2, 3, 4" * 20000 + "</answer>"
    started = time.perf_counter()
    assert not is_rec_format(nasty)
    assert not is_rec_format("<think></think><answer>{" + "[1,1,1," * 50000)
    assert time.perf_counter() - started < 1.0
