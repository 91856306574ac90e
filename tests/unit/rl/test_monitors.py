import math

import numpy as np
import pytest

from vlm_r1.data.sample import BoxSolution
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rl.monitors import MIN_TRUE_SPREAD, centre_spread_ratio, completion_monitors

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


def _old_centre_spread_ratio(predicted: np.ndarray, truth: np.ndarray) -> float:
    """The formula before degenerate denominators were handled (the issue's report)."""
    return float(np.linalg.norm(predicted.std(axis=0)) / np.linalg.norm(truth.std(axis=0)))


def test_near_zero_true_spread_is_undefined_instead_of_a_spike():
    # The case: every REC target in the batch sits in (almost) the same place, so the
    # true spread is ~0 while the sampled answers vary; the old ratio was in the tens of
    # thousands and flattened the whole curve.
    solutions = [
        BoxSolution(((10.0, 10.0, 30.0, 30.0),), (None,)),
        BoxSolution(((10.001, 10.0, 30.001, 30.0),), (None,)),  # 1e-5 of the image away
    ] * 3
    texts = [f"<answer>[{x}, 300, {x + 200}, 500]</answer>" for x in (100, 300, 500)] * 2
    predicted = np.array([[(x + 100) / 1000, 0.4] for x in (100, 300, 500)] * 2)
    truth = np.array([[(b.boxes[0][0] + b.boxes[0][2]) / 200, 0.2] for b in solutions])
    assert _old_centre_spread_ratio(predicted, truth) > 10_000
    assert math.isnan(centre_spread_ratio(predicted, truth))
    m = completion_monitors(texts, solutions, ["rec"] * 6, [SPACE] * 6)
    assert math.isnan(m["monitor/centre_spread_ratio"])


def test_true_spread_threshold_and_clipping_hand_computed():
    # Two targets 0.2 apart on x: per-axis std (0.1, 0) -> spread 0.1, above MIN_TRUE_SPREAD.
    truth = np.array([[0.4, 0.5], [0.6, 0.5]])
    assert centre_spread_ratio(np.array([[0.45, 0.5], [0.55, 0.5]]), truth) == pytest.approx(0.5)
    # 0.08 apart: spread 0.04 < 0.05, undefined.
    close = np.array([[0.46, 0.5], [0.54, 0.5]])
    assert MIN_TRUE_SPREAD == 0.05 and math.isnan(centre_spread_ratio(truth, close))
    # A centre three image widths to the right counts at the image's edge: spread of x in
    # {1.0, 0.2} is 0.4 over a true 0.3 (unclipped it would be 1.4 / 0.3).
    wide = np.array([[0.2, 0.5], [0.8, 0.5]])
    outside = np.array([[3.0, 0.5], [0.2, 0.5]])
    assert centre_spread_ratio(outside, wide) == pytest.approx(0.4 / 0.3)
    assert _old_centre_spread_ratio(outside, wide) == pytest.approx(1.4 / 0.3)


def test_box_count_ratio_skips_samples_without_true_boxes():
    empty = BoxSolution((), ())  # an OVD image without the asked category: no ratio exists
    three = "<answer>[[0,0,100,100],[200,200,300,300],[400,400,500,500]]</answer>"
    two = "<answer>[[100,100,300,300],[600,600,700,700]]</answer>"
    m = completion_monitors([three, two], [empty, GT], ["ovd", "rec"], [SPACE] * 2)
    assert m["monitor/pred_gt_box_ratio"] == pytest.approx(2.0)  # before: (3/1 + 2/1) / 2
    only_empty = completion_monitors([three], [empty], ["ovd"], [SPACE])
    assert math.isnan(only_empty["monitor/pred_gt_box_ratio"])


def test_why0_shares_are_undefined_without_box_samples():
    m = completion_monitors(["<think>a</think><answer>4</answer>"], ["4"], ["count"], [None])
    why0 = {k: v for k, v in m.items() if k.startswith("monitor/why0/")}
    assert len(why0) == 4 and all(math.isnan(v) for v in why0.values())  # before: all 0.0


def test_well_formed_answer_rate_counts_detection_answers_the_strict_reading_takes():
    ovd_gt = BoxSolution(((10.0, 10.0, 30.0, 30.0),), ("cat",))
    texts = [
        '<answer>```json\n[{"bbox_2d": [100, 100, 300, 300], "label": "cat"}]\n```</answer>',
        "<answer>None</answer>",  # an explicit "nothing here" is well formed
        '<answer>[{"bbox_2d": [100, 100, 300, 300], ": lly"circle"}]</answer>',  # broken JSON
        "<answer>[100, 100, 300, 300]</answer>",  # no label
        "no answer",
    ]
    m = completion_monitors(texts, [ovd_gt] * 5, ["ovd"] * 5, [SPACE] * 5)
    assert m["monitor/well_formed_answer_rate"] == pytest.approx(2 / 5)
    # REC answers are bare boxes by design: the rate is over detection samples only.
    rec = completion_monitors(["<answer>[1, 1, 5, 5]</answer>"], [GT], ["rec"], [SPACE])
    assert math.isnan(rec["monitor/well_formed_answer_rate"])
