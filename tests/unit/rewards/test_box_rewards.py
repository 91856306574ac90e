import json

import numpy as np
import pytest
from coco_oracle import pycocotools_ap, random_case
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rewards.box_math import iou_matrix, paired_iou


def naive_iou(a, b, inclusive=False):
    """Reference written differently: explicit overlap lengths, inverted boxes overlap nothing."""
    one = 1.0 if inclusive else 0.0
    if a[2] < a[0] or a[3] < a[1] or b[2] < b[0] or b[3] < b[1]:
        return 0.0
    ox = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + one)
    oy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + one)
    area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
    area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one)
    union = area_a + area_b - ox * oy
    return ox * oy / union if union > 0 else 0.0


coord = st.floats(-50, 500, allow_nan=False, allow_infinity=False)
box = st.lists(coord, min_size=4, max_size=4)


@settings(max_examples=400, deadline=None)
@given(st.lists(box, min_size=1, max_size=5), st.lists(box, min_size=1, max_size=5), st.booleans())
def test_iou_matrix_matches_naive_reference(a, b, inclusive):
    got = iou_matrix(np.array(a), np.array(b), inclusive)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            assert got[i, j] == pytest.approx(naive_iou(x, y, inclusive), abs=1e-12)
    n = min(len(a), len(b))
    np.testing.assert_allclose(
        paired_iou(np.array(a[:n]), np.array(b[:n]), inclusive), np.diag(got[:n, :n]), atol=1e-12
    )


def answer(boxes, labels=None):
    items = [
        {"bbox_2d": [round(float(v), 3) for v in b], **({"label": labels[k]} if labels else {})}
        for k, b in enumerate(boxes)
    ]
    return f"<think>look</think><answer>```json\n{json.dumps(items)}\n```</answer>"


def test_rec_iou_known_values_and_statuses():
    spec = resolve_reward("rec_iou")
    out = call_reward(
        spec,
        [
            "<think>t</think><answer>[0, 0, 10, 10]</answer>",
            "<think>t</think><answer>[5, 0, 15, 10]</answer>",
            "<answer>[10, 10, 0, 0]</answer>",  # inverted: no area
            "[0, 0, 10, 10]",  # no answer tag
            "<answer>the box</answer>",
        ],
        [[0, 0, 10, 10]] * 5,
    )
    assert out.scores == pytest.approx([1.0, 1 / 3, 0.0, 0.0, 0.0])
    assert [d["status"] for d in out.details] == ["ok", "ok", "ok", "no_answer", "malformed"]
    inclusive = call_reward(
        resolve_reward("rec_iou", inclusive=True),
        ["<answer>[5, 0, 15, 10]</answer>"],
        [[0, 0, 10, 10]],
    )
    assert inclusive.scores[0] == pytest.approx(6 * 11 / (2 * 121 - 66))


def test_rec_acc_threshold_and_strictness():
    completions = [
        "<answer>[0, 0, 10, 10]</answer>",
        "<answer>[0, 0, 20, 10]</answer>",
    ]  # IoU 1, 0.5
    gt = [[0, 0, 10, 10]] * 2
    assert call_reward(resolve_reward("rec_acc"), completions, gt).scores == [1.0, 1.0]
    assert call_reward(resolve_reward("rec_acc", strict=True), completions, gt).scores == [1.0, 0.0]


def test_rec_uses_model_coordinate_system():
    """A Qwen2-VL answer in 0-1000 units is mapped to pixels before IoU."""
    space = BoxSpace("norm1000", (200, 100))
    out = call_reward(
        resolve_reward("rec_iou"),
        ["<answer>[0, 0, 500, 500]</answer>"],
        [[0, 0, 100, 50]],
        box_spaces=[space],
    )
    assert out.scores[0] == pytest.approx(1.0)


def test_ap_reward_agrees_with_pycocotools_through_text():
    rng = np.random.default_rng(99)
    cases = [random_case(rng) for _ in range(300)]
    completions, solutions, expected = [], [], []
    for pb, pl, ps, gb, gl in cases:
        items = [
            {"bbox_2d": [float(v) for v in b], "label": lab, "score": float(s)}
            for b, lab, s in zip(pb, pl, ps, strict=True)
        ]
        completions.append(f"<think>x</think><answer>{json.dumps(items)}</answer>")
        solutions.append({"boxes": gb, "labels": gl})
        expected.append(pycocotools_ap(pb, pl, ps, gb, gl))
    ap = call_reward(resolve_reward("ap"), completions, solutions).scores
    ap50 = call_reward(resolve_reward("ap50"), completions, solutions).scores
    for got_ap, got_ap50, exp, case in zip(ap, ap50, expected, cases, strict=True):
        if exp is None:
            continue  # our explicit empty-gt rule, tested below
        if len(set(case[4])) == 1:
            assert got_ap >= exp[0] - 1e-6  # unlabeled-box leniency cannot apply: all labelled
        assert got_ap == pytest.approx(exp[0], abs=1e-6)
        assert got_ap50 == pytest.approx(exp[1], abs=1e-6)


GT = {"boxes": [[10, 10, 30, 30], [60, 60, 90, 90]], "labels": ["cat", "cat"]}


@pytest.mark.parametrize("name", ["ap", "ap50", "od_length", "detection_weighted"])
def test_detection_empty_cases(name):
    spec = resolve_reward(name)
    none_gt = {"boxes": [], "labels": []}
    scores = call_reward(
        spec,
        [
            "<think>t</think><answer>None</answer>",  # correct "nothing here"
            answer([[0, 0, 5, 5]], ["cat"]),  # boxes where there is nothing
            "<think>t</think><answer>None</answer>",  # missed everything
            "<think>no answer tag</think>",
        ],
        [none_gt, none_gt, GT, GT],
    ).scores
    assert scores == [1.0, 0.0, 0.0, 0.0]


def test_reward_hacking_cases():
    """Plain AP rewards flooding; od_length does not (VLM-R1 paper, sec. 4.3)."""
    perfect = answer(GT["boxes"], GT["labels"])
    duplicates = answer(
        [GT["boxes"][0], GT["boxes"][1]] * 25, ["cat"] * 50
    )  # 50 boxes, all hits first
    whole_image = answer([[0, 0, 100, 100]], ["cat"])
    junk = [[x, 95, x + 3, 98] for x in range(0, 96, 2)]
    hits_then_junk = answer(GT["boxes"] + junk, ["cat"] * (2 + len(junk)))
    completions = [
        perfect,
        duplicates,
        whole_image,
        hits_then_junk,
        "<think>t</think><answer></answer>",
    ]
    ap = call_reward(resolve_reward("ap50"), completions, [GT] * 5).scores
    od = call_reward(resolve_reward("od_length", iou="50"), completions, [GT] * 5).scores
    assert ap[0] == pytest.approx(1.0) and od[0] == pytest.approx(1.0)
    # 50 duplicates: plain AP50 is still perfect, odLength divides it by 25.
    assert ap[1] == pytest.approx(1.0)
    assert od[1] == pytest.approx(2 / 50)
    # One whole-image box overlaps both objects weakly: AP50 0, odLength 0.
    assert ap[2] == 0.0 and od[2] == 0.0
    # Both hits then 48 junk boxes: junk ranked after every hit costs plain AP nothing.
    assert ap[3] == pytest.approx(1.0) and od[3] == pytest.approx(2 / 50)
    assert ap[4] == 0.0 and od[4] == 0.0


def test_detection_weighted_known_value():
    # One exact hit, one miss (IoU 0), one false positive. VLM-R1's detection_score divides
    # position and label by #gt (was: mean over matches) and completeness is
    # 1 - (miss + false-alarm rate) / 2 (was: 2 * matched / (n_pred + n_gt)); see
    # test_detection_weighted_vlmr1.py. Position 1/2, completeness 1 - (1/2 + 1/2) / 2.
    completion = answer([[10, 10, 30, 30], [200, 200, 210, 210]], ["cat", "dog"])
    out = call_reward(resolve_reward("detection_weighted"), [completion], [GT])
    assert out.scores[0] == pytest.approx(0.7 * 0.5 + 0.3 * 0.5)
    labelled = call_reward(
        resolve_reward(
            "detection_weighted", position_weight=0.0, label_weight=1.0, completeness_weight=0.0
        ),
        [completion],
        [GT],
    )
    assert labelled.scores[0] == pytest.approx(0.5)  # 1 agreeing match / 2 gts (was 1 / 1)


def test_unlabelled_boxes_take_the_single_gt_category_when_read_leniently():
    bare = ["<answer>[[10, 10, 30, 30], [60, 60, 90, 90]]</answer>"]
    assert call_reward(resolve_reward("ap", strict=False), bare, [GT]).scores == [1.0]
    assert call_reward(resolve_reward("ap"), bare, [GT]).scores == [0.0]


# Rollouts that GRPO with the AP reward wrote in the demo's `--full` run (seed 0, step 48):
# the first box's JSON is intact, everything after it is broken. The lenient parser read that
# box (label-less, so it took the single true category) and AP paid up to 1.0 for it.
BROKEN = [
    '<think>t</think><answer>[{"bbox_2d": [10, 10, 30, 30], ": 9hexagon"}], ": {": 670, '
    '{": [179], "}70, d": {": 634]</answer>',
    '<think>t</think><answer>[{"bbox_2d": [10, 10, 30, 30], ": lly"circle"}]</answer>',
    "<think>t</think><answer>[[10, 10, 30, 30], [60, 60, 90, 90]]</answer>",  # no labels
]


@pytest.mark.parametrize("name", ["ap", "ap50", "od_length", "detection_weighted"])
def test_detection_rewards_pay_nothing_for_an_answer_that_is_not_the_asked_json(name):
    assert call_reward(resolve_reward(name), BROKEN, [GT] * 3).scores == [0.0, 0.0, 0.0]
    lenient = call_reward(resolve_reward(name, strict=False), BROKEN, [GT] * 3).scores
    assert min(lenient) > 0.0  # the opt-out reads them, as before
    well_formed = answer(GT["boxes"], GT["labels"])
    assert call_reward(resolve_reward(name), [well_formed], [GT]).scores == [1.0]


@pytest.mark.parametrize("name", ["ap", "ap50", "od_length"])
@pytest.mark.parametrize("strict", [True, False])
def test_without_ground_truth_only_an_explicit_none_earns_the_reward(name, strict):
    none_gt = {"boxes": [], "labels": []}
    completions = [
        "<think>t</think><answer>None</answer>",
        "<think>t</think><answer>```json\n[]\n```</answer>",
        "<think>t</think><answer>I cannot tell</answer>",  # says nothing parseable
        "<think>t</think><answer></answer>",  # empty
        "<think>no answer tag</think>",
    ]
    scores = call_reward(resolve_reward(name, strict=strict), completions, [none_gt] * 5).scores
    assert scores == [1.0, 1.0, 0.0, 0.0, 0.0]
