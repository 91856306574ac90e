import math

import pytest

from vlm_r1.data.sample import BoxSolution
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rl.monitors import completion_monitors

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
