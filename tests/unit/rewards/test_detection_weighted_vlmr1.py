"""``detection_weighted`` equals VLM-R1's ``weighted_sum`` (``detection_score``) on random cases.

The oracle (``tests/support/vlmr1_detection_score.py``) is a loop transcription of VLM-R1's
function that reads the answer and solution *text* the way VLM-R1 does; our reward reads the
same completion through its own parser. Cases: 0-7 predictions, 0-5 ground-truth boxes,
jittered and exact hits, duplicates, disjoint boxes, slivers about one unit wide (VLM-R1's
overlap rule), inverted boxes, label mismatches and case changes, "None" answers and solutions.
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vlmr1_detection_score import score_boxes, vlmr1_iou, weighted_sum_reward

from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rewards.detection_math import vlmr1_iou_matrix

GT_LABELS = ["cat", "dog", "hot dog"]
OTHER_LABELS = ["Cat", "DOG", "Hot Dog", "bird", "person"]


def _coordinate(rng, value):
    """Integers mostly (what models write), sometimes one decimal."""
    return float(round(value)) if rng.random() < 0.7 else round(float(value), 1)


def _gt_box(rng):
    x, y = rng.uniform(0, 200, 2)
    if rng.random() < 0.15:  # thin: width or height around VLM-R1's 1-unit overlap rule
        w, h = rng.choice([0.5, 1.0, 1.5, 2.0]), rng.uniform(5, 60)
        if rng.random() < 0.5:
            w, h = h, w
    else:
        w, h = rng.uniform(2, 80, 2)
    return [_coordinate(rng, v) for v in (x, y, x + w, y + h)]


def _pred_box(rng, gts):
    kind = rng.random()
    if gts and kind < 0.7:  # near a ground-truth box
        g = gts[rng.integers(len(gts))]
        if rng.random() < 0.25:
            return list(g)  # exact hit
        scale = rng.choice([0.5, 1.0, 2.0, 6.0, 20.0])
        return [_coordinate(rng, v + rng.normal(0, scale)) for v in g]
    if gts and kind < 0.78:  # a sliver along a ground-truth edge
        g = gts[rng.integers(len(gts))]
        d = rng.choice([0.5, 1.0, 1.5, 2.0])
        return [g[2] - d, g[1], g[2] + 30, g[3]]
    if kind < 0.84:  # inverted
        b = _gt_box(rng)
        return [b[2], b[1], b[0], b[3]] if rng.random() < 0.5 else [b[2], b[3], b[0], b[1]]
    return _gt_box(rng)  # anywhere: mostly disjoint


def random_case(rng):
    n_gt = 0 if rng.random() < 0.12 else int(rng.integers(1, 6))
    gts = [_gt_box(rng) for _ in range(n_gt)]
    gt_labels = [GT_LABELS[int(rng.integers(len(GT_LABELS)))] for _ in range(n_gt)]
    if gts and rng.random() < 0.1:  # a perfect answer, in some order
        order = rng.permutation(n_gt)
        return [gts[k] for k in order], [gt_labels[k] for k in order], gts, gt_labels
    n_pred = 0 if rng.random() < 0.12 else int(rng.integers(1, 8))
    preds, labels = [], []
    for _ in range(n_pred):
        if preds and rng.random() < 0.12:  # duplicate an earlier prediction
            k = int(rng.integers(len(preds)))
            preds.append(list(preds[k]))
            labels.append(labels[k])
            continue
        preds.append(_pred_box(rng, gts))
        if gt_labels and rng.random() < 0.65:
            labels.append(gt_labels[int(rng.integers(n_gt))])
        else:
            labels.append(OTHER_LABELS[int(rng.integers(len(OTHER_LABELS)))])
    return preds, labels, gts, gt_labels


def fenced(boxes, labels):
    items = [{"bbox_2d": b, "label": lab} for b, lab in zip(boxes, labels, strict=True)]
    return f"```json\n{json.dumps(items)}\n```"


def texts(rng, preds, labels, gts, gt_labels):
    """(completion, VLM-R1 solution text, our solution) for one case."""
    if preds:
        answer = fenced(preds, labels)
    else:
        answer = str(rng.choice(["None", "none.", "```json\n[]\n```", "nothing to see"]))
    completion = f"<think>look</think><answer>{answer}</answer>"
    vlmr1_solution = f"<answer> {fenced(gts, gt_labels) if gts else 'None'} </answer>"
    return completion, vlmr1_solution, {"boxes": gts, "labels": gt_labels}


def test_equals_vlmr1_weighted_sum_on_random_cases():
    rng = np.random.default_rng(2025)
    completions, solutions, expected = [], [], []
    for _ in range(2500):
        case = random_case(rng)
        completion, vlmr1_solution, ours = texts(rng, *case)
        completions.append(completion)
        solutions.append(ours)
        expected.append(weighted_sum_reward(completion, vlmr1_solution))
    got = call_reward(resolve_reward("detection_weighted"), completions, solutions).scores
    wrong = [
        (k, g, e) for k, (g, e) in enumerate(zip(got, expected, strict=True)) if abs(g - e) > 1e-9
    ]
    assert not wrong, f"{len(wrong)} of {len(got)} differ from VLM-R1, e.g. {wrong[:5]}"
    # The cases are varied: every branch of the score is reached.
    values = np.array(expected)
    assert (values == 0).mean() > 0.1 and (values == 1).mean() > 0.05
    assert ((values > 0) & (values < 1)).mean() > 0.5


def test_equals_vlmr1_with_other_weights_and_thresholds():
    """``detection_score``'s alpha, beta, gamma and iou_threshold map to our parameters."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        alpha, beta, gamma = rng.uniform(0, 1, 3)
        threshold = float(rng.choice([0.0, 0.3, 0.5, 0.75, 0.9]))
        spec = resolve_reward(
            "detection_weighted",
            iou_threshold=threshold,
            position_weight=alpha,
            label_weight=beta,
            completeness_weight=gamma,
        )
        cases = [random_case(rng) for _ in range(25)]
        cases = [c for c in cases if c[2]]  # ground truth present: detection_score itself
        completions = [f"<answer>{fenced(p, pl) if p else 'None'}</answer>" for p, pl, *_ in cases]
        solutions = [{"boxes": g, "labels": gl} for *_, g, gl in cases]
        got = call_reward(spec, completions, solutions).scores
        for score, (p, pl, g, gl) in zip(got, cases, strict=True):
            preds = [{"bbox_2d": b, "label": lab.lower()} for b, lab in zip(p, pl, strict=True)]
            gts = [{"bbox_2d": b, "label": lab} for b, lab in zip(g, gl, strict=True)]
            assert score == pytest.approx(
                score_boxes(preds, gts, threshold, alpha, beta, gamma), abs=1e-9
            )


coordinate = st.one_of(st.integers(-5, 60).map(float), st.floats(-5, 60).map(lambda v: round(v, 1)))
box = st.lists(coordinate, min_size=4, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(box, min_size=1, max_size=4), st.lists(box, min_size=1, max_size=4))
def test_iou_matrix_matches_the_transcription(a, b):
    got = vlmr1_iou_matrix(np.array(a), np.array(b))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            try:
                expected = vlmr1_iou(x, y)
            except ZeroDivisionError:
                expected = 0.0  # VLM-R1's try/except around iou()
            assert got[i, j] == pytest.approx(expected, abs=1e-12)


GT = {"boxes": [[10, 10, 30, 30], [60, 60, 90, 90]], "labels": ["cat", "cat"]}


def score(completions, solutions, **params):
    return call_reward(resolve_reward("detection_weighted", **params), completions, solutions)


def test_hand_computed_values():
    hit_and_false_alarm = fenced([[10, 10, 30, 30], [200, 200, 210, 210]], ["cat", "dog"])
    wrong_label = fenced([[10, 10, 30, 30], [60, 60, 90, 90]], ["dog", "Cat"])
    sliver = {"boxes": [[10, 10, 11, 40]], "labels": ["cat"]}  # 1 unit wide
    out = score(
        [f"<answer>{a}</answer>" for a in (hit_and_false_alarm, wrong_label)]
        + ["<answer>[[10, 10, 11, 40]]</answer>"],
        [GT, GT, sliver],
    )
    # One exact hit of two gts, one false alarm: position 1/2, completeness 1 - (1/2 + 1/2)/2.
    # Label mismatch: both boxes matched, one counts IoU 0: position 1/2, completeness 1.
    # A 1-unit-wide box on itself: VLM-R1's overlap test fails, IoU 0: no match at all.
    assert out.scores == pytest.approx([0.7 * 0.5 + 0.3 * 0.5, 0.7 * 0.5 + 0.3 * 1.0, 0.0])
    assert out.details[0]["position"] == pytest.approx(0.5)
    assert out.details[1]["matched"] == 2 and out.details[1]["label"] == pytest.approx(0.5)
    labels_only = score(
        [f"<answer>{wrong_label}</answer>"],
        [GT],
        position_weight=0.0,
        label_weight=1.0,
        completeness_weight=0.0,
    )
    assert labels_only.scores == pytest.approx([0.5])


def test_no_ground_truth_needs_the_answer_none():
    """VLM-R1: a "none" solution scores 1 only when the cleaned answer is exactly "none"."""
    none_gt = {"boxes": [], "labels": []}
    answers = [
        "None",
        " none. ",
        "NONE",
        "```json\n[]\n```",
        "[]",
        "no objects",
        "",
        "[1, 2, 3, 4]",
    ]
    out = score([f"<think>t</think><answer>{a}</answer>" for a in answers], [none_gt] * 8)
    assert out.scores == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for a, s in zip(answers, out.scores, strict=True):
        assert weighted_sum_reward(f"<answer>{a}</answer>", "<answer> None </answer>") == s
    assert score(["None"], [none_gt]).scores == [0.0]  # our require_answer_tag default
    assert score(["None"], [none_gt], require_answer_tag=False).scores == [1.0]


def test_ground_truth_without_prediction_scores_zero():
    answers = ["None", "```json\n[]\n```", "garbage", "```json\n[{broken\n```"]
    out = score([f"<answer>{a}</answer>" for a in answers], [GT] * 4)
    assert out.scores == [0.0] * 4


def test_unlabelled_boxes_take_the_single_gt_category_when_read_leniently():
    """VLM-R1 is undefined here (it raises); read leniently, ours treats them as the only
    category; the strict default pays nothing for an answer without labels."""
    bare = "<answer>[[10, 10, 30, 30], [60, 60, 90, 90]]</answer>"
    assert score([bare], [GT], strict=False).scores == pytest.approx([1.0])
    two_categories = {"boxes": GT["boxes"], "labels": ["cat", "dog"]}
    out = score([bare], [two_categories], strict=False)
    assert out.scores == pytest.approx([0.3])  # matched but no label agrees: position 0
    assert score([bare], [GT]).scores == [0.0]
