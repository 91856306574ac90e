import math

import numpy as np
import pytest

from vlm_r1.data.sample import BoxSolution
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rl.monitors import centre_spread_ratio, completion_monitors

GT = BoxSolution(((10.0, 10.0, 30.0, 30.0),), (None,))
SPACE = BoxSpace("norm1000", (100, 100))  # model units = 10 x pixels


def test_hacking_aha_and_diagnostic_signals():
    texts = [
        "<think>the circle. wait, let me check again</think><answer>[100, 100, 300, 300]</answer>",  # hit
        "<think>x</think><answer></answer>",  # empty answer
        "<think>x</think><answer>[0, 0, 1000, 1000]</answer>",  # whole image
        "<think>x</think><answer>[[500,500,600,600],[500,500,600,600],[500,500,601,600]]</answer>",  # duplicates, miss
        "<think>x</think>",  # no answer tag
        "<think>x</think><answer>[0, 0, 2000, 300]</answer>",  # outside the image (wrong coordinate system)
        "<think>x</think><answer>somewhere left</answer>",  # unparsable
    ]
    m = completion_monitors(texts, [GT] * 7, ["rec"] * 7, [SPACE] * 7)
    assert m["monitor/recheck_rate"] == pytest.approx(1 / 7)
    assert m["monitor/empty_answer_rate"] == pytest.approx(2 / 7)  # empty + missing answer
    assert m["monitor/whole_image_box_rate"] == pytest.approx(1 / 7)
    assert m["monitor/duplicate_box_rate"] == pytest.approx(
        2 / 6
    )  # 2 of the 6 predicted boxes repeat one
    assert m["monitor/pred_gt_box_ratio"] == pytest.approx((1 + 0 + 1 + 3 + 0 + 1 + 0) / 7)
    assert m["monitor/why0/no_answer"] == pytest.approx(1 / 7)
    assert m["monitor/why0/unparsable"] == pytest.approx(2 / 7)  # the empty answer and the prose
    assert m["monitor/why0/outside_image"] == pytest.approx(1 / 7)
    assert m["monitor/why0/iou_zero"] == pytest.approx(1 / 7)  # the duplicates far away
    assert m["monitor/think_words"] > 0


def test_text_tasks_skip_box_signals():
    m = completion_monitors(["<think>a</think><answer>4</answer>"], ["4"], ["count"], [None])
    assert math.isnan(m["monitor/whole_image_box_rate"]) and m["monitor/empty_answer_rate"] == 0
    boxes = completion_monitors(["<answer>[1, 1, 5, 5]</answer>"], [[1, 1, 5, 5]], ["rec"], [None])
    assert m.keys() == boxes.keys()  # the same metrics on every process, whatever its tasks


def test_centre_spread_ratio_hand_computed():
    truth = np.array([[0.2, 0.2], [0.8, 0.4], [0.5, 0.9]])
    assert centre_spread_ratio(truth, truth) == pytest.approx(1.0)
    assert centre_spread_ratio(np.full_like(truth, 0.5), truth) == 0.0
    shrunk = truth.mean(axis=0) + 0.5 * (truth - truth.mean(axis=0))
    assert centre_spread_ratio(shrunk, truth) == pytest.approx(0.5)
    assert math.isnan(centre_spread_ratio(truth[:1], truth[:1]))
    assert math.isnan(centre_spread_ratio(truth, np.full_like(truth, 0.3)))


def test_one_box_for_every_image_has_zero_spread():
    solutions = [
        BoxSolution((box,), (None,))
        for box in ((10.0, 10.0, 30.0, 30.0), (60.0, 20.0, 90.0, 40.0), (30.0, 60.0, 50.0, 95.0))
    ]
    in_model_units = [
        "[{:.0f}, {:.0f}, {:.0f}, {:.0f}]".format(*(10 * v for v in s.boxes[0])) for s in solutions
    ]
    hedged = ["<answer>[300, 300, 600, 600]</answer>"] * 3
    exact = [f"<answer>{box}</answer>" for box in in_model_units]
    spread = {
        name: completion_monitors(texts, solutions, ["rec"] * 3, [SPACE] * 3)[
            "monitor/centre_spread_ratio"
        ]
        for name, texts in (("hedged", hedged), ("exact", exact))
    }
    assert spread == {"hedged": 0.0, "exact": pytest.approx(1.0)}
