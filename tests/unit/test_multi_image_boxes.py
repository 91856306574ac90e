"""Multi-image answers: each box names its image (``"image": k``, from 1) and is read in that
image's coordinate system; boxes of different images never match."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoProcessor
from two_image_rec import write_two_image_rec

from vlm_r1.data.jsonl import DataError, read_samples
from vlm_r1.eval.runner import evaluate_samples
from vlm_r1.models import family_names, get_adapter
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.parsing import parse_boxes
from vlm_r1.policy.prompts import MULTI_IMAGE_BOX_HINT, prepare_prompt
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rewards.box_math import paired_iou
from vlm_r1.rewards.common import gt_boxes, place_on_canvas, predicted_boxes
from vlm_r1.sft import box_answer

# Image 1 is 200 x 100, image 2 is 100 x 400; both 0-1000 normalised.
SPACES = (BoxSpace("norm1000", (200, 100)), BoxSpace("norm1000", (100, 400)))
# A box in image 2's pixels, and what a 0-1000 model writes for it: x / 100 * 1000, y / 400 * 1000.
GT_IN_2 = {"bbox_2d": [10, 40, 60, 200], "image": 2}
WRITTEN_FOR_2 = [100, 100, 600, 500]


def answer(*boxes):
    return "<answer>" + json.dumps(list(boxes)) + "</answer>"


def rec_iou(completions, solution, **ctx):
    spec = resolve_reward("rec_iou")
    return call_reward(spec, completions, [solution] * len(completions), **ctx).scores


@pytest.mark.parametrize(
    ("value", "number"), [(2, 2), (2.0, 2), ("2", 2), (1, 1), (0, 0), ("x", 0), (1.5, 0)]
)
def test_the_image_field_is_read_as_written(value, number):
    (box,) = parse_boxes(json.dumps([{"bbox_2d": [1, 2, 3, 4], "image": value}])).boxes
    assert box.image == number
    (plain,) = parse_boxes("[1, 2, 3, 4]").boxes
    assert plain.image is None


def test_each_box_is_read_in_its_own_images_system_hand_computed():
    solution = [GT_IN_2]
    n = len(SPACES)
    ctx = {"image_box_spaces": [SPACES] * 4}
    completions = [
        answer({"bbox_2d": WRITTEN_FOR_2, "image": 2}),  # right image: exact
        answer({"bbox_2d": WRITTEN_FOR_2, "image": 1}),  # the wrong image
        answer({"bbox_2d": WRITTEN_FOR_2}),  # no image named: image 1
        answer({"bbox_2d": WRITTEN_FOR_2, "image": n + 1}),  # an image the row lacks
    ]
    assert rec_iou(completions, solution, **ctx) == [1.0, 0.0, 0.0, 0.0]
    # Read in image 2's system, the box is image 2's pixels [10, 40, 60, 200].
    _, pixels = predicted_boxes(completions[0], SPACES)
    truth, _ = gt_boxes(solution, SPACES)
    np.testing.assert_allclose(pixels, truth)
    np.testing.assert_allclose(pixels[0] - [400, 0, 400, 0], [10, 40, 60, 200])  # 2 x 200 px
    # Only the first image's space (the old context key) cannot judge a box in image 2.
    with pytest.raises(ValueError, match="image_box_spaces"):
        rec_iou(completions[:1], solution, box_spaces=[SPACES[0]])


def test_single_image_answers_are_unchanged():
    space = SPACES[0]
    text = answer({"bbox_2d": [100, 100, 600, 500]})
    _, pixels = predicted_boxes(text, space)
    np.testing.assert_allclose(pixels, [[20, 10, 120, 50]])
    _, same = predicted_boxes(text, (space,))
    np.testing.assert_array_equal(pixels, same)
    _, named_1 = predicted_boxes(answer({"bbox_2d": [100, 100, 600, 500], "image": 1}), space)
    np.testing.assert_array_equal(pixels, named_1)


boxes_in = st.tuples(st.floats(0, 90), st.floats(0, 90), st.floats(1, 100), st.floats(1, 100)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]
)


@settings(max_examples=200, deadline=None)
@given(a=boxes_in, b=boxes_in, ia=st.integers(1, 3), ib=st.integers(1, 3))
def test_canvas_keeps_iou_within_an_image_and_zero_across(a, b, ia, ib):
    spaces = (
        BoxSpace("norm1", (100, 100)),
        BoxSpace("norm1", (200, 50)),
        BoxSpace("norm1", (7, 9)),
    )
    placed_a = place_on_canvas(np.array([a]), [ia], spaces)
    placed_b = place_on_canvas(np.array([b]), [ib], spaces)
    iou = paired_iou(placed_a, placed_b, False)[0]
    if ia == ib:
        assert iou == pytest.approx(paired_iou(np.array([a]), np.array([b]), False)[0], abs=1e-9)
    else:
        assert iou == 0.0


def test_detection_rewards_match_boxes_within_their_images():
    # Image 1's box [100, 50, 180, 90] is written [500, 500, 900, 900] (x / 200, y / 100).
    solution = [
        {"bbox_2d": [100, 50, 180, 90], "label": "cat", "image": 1},
        {**GT_IN_2, "label": "cat"},
    ]
    right = answer(
        {"bbox_2d": [500, 500, 900, 900], "label": "cat", "image": 1},
        {"bbox_2d": WRITTEN_FOR_2, "label": "cat", "image": 2},
    )
    swapped = answer(
        {"bbox_2d": [500, 500, 900, 900], "label": "cat", "image": 2},
        {"bbox_2d": WRITTEN_FOR_2, "label": "cat", "image": 1},
    )
    ctx = {"image_box_spaces": [SPACES] * 2}
    scores = call_reward(resolve_reward("ap"), [right, swapped], [solution] * 2, **ctx).scores
    assert scores == [pytest.approx(1.0), 0.0]


def test_rows_name_images_and_bad_numbers_fail_naming_the_field(tmp_path):
    path = write_two_image_rec(tmp_path / "ok", 6, seed=3)
    samples = list(read_samples(str(path)))
    assert {s.solution.images for s in samples} == {(1,), (2,)}
    assert all('"image"' in s.answer_text() for s in samples)
    row = json.loads(path.read_text().splitlines()[0])
    row["conversations"][1]["value"] = json.dumps([{"bbox_2d": [1, 2, 3, 4], "image": 3}])
    bad = tmp_path / "ok" / "bad.jsonl"
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r'"image": 3.*2 image'):
        list(read_samples(str(bad)))


@pytest.fixture(scope="module")
def two_image_samples(tmp_path_factory):
    return list(read_samples(str(write_two_image_rec(tmp_path_factory.mktemp("two"), 8, seed=1))))


@pytest.mark.parametrize("family", family_names())
def test_sft_targets_name_their_image_and_score_perfectly_in_eval(
    family, tiny_path, two_image_samples
):
    adapter = get_adapter(family)
    processor = AutoProcessor.from_pretrained(tiny_path(family))
    prompts = {s.id: prepare_prompt(adapter, processor, s) for s in two_image_samples}
    first = prompts[two_image_samples[0].id]
    assert len(first.spaces()) == 2 and first.spaces()[0] != first.spaces()[1]
    assert MULTI_IMAGE_BOX_HINT in first.chat_text

    def oracle(batch):
        return ["<answer>" + box_answer(p.sample, p.spaces()) + "</answer>" for p in batch]

    metrics, _ = evaluate_samples(two_image_samples, adapter, processor, oracle)
    assert metrics["rec"]["acc@0.5"] == 1.0
    # Every box read in the first image's system (as before multi-image answers): the boxes
    # that lie in image 2 miss.
    texts = oracle(list(prompts.values()))
    plain = [{"boxes": s.solution.boxes, "labels": s.solution.labels} for s in two_image_samples]
    unnamed = [t.replace(', "image": 2', "").replace(', "image": 1', "") for t in texts]
    firsts = [p.spaces()[0] for p in prompts.values()]
    scores = call_reward(resolve_reward("rec_acc"), unnamed, plain, box_spaces=firsts).scores
    in_two = [s.solution.images == (2,) for s in two_image_samples]
    assert any(in_two) and not any(s for s, two in zip(scores, in_two, strict=True) if two)
