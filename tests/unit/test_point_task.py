"""Point (click) grounding: coordinate mapping per family, parsing, the two rewards, the
accuracy dispatcher, reading point rows, the SFT target and evaluation against an oracle."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_r1.data.jsonl import DataError, parse_row, read_samples
from vlm_r1.data.sample import BoxSolution, Sample
from vlm_r1.data.shapes import write_shapes
from vlm_r1.eval.metrics import point_metrics
from vlm_r1.eval.runner import evaluate_samples
from vlm_r1.models import family_names, get_adapter
from vlm_r1.models.boxes import (
    BoxSpace,
    as_written,
    points_from_model,
    points_to_model,
    round_boxes,
    round_trip_error,
    to_model,
)
from vlm_r1.parsing import parse_point
from vlm_r1.policy.prompts import PreparedPrompt
from vlm_r1.rewards import RewardConfigError, call_reward, resolve_reward
from vlm_r1.rewards.points import predicted_point

FAMILIES = tuple(family_names())
# A Qwen image processor as qwen_common reads it (patch 14, merge 2: factor 28; default bounds).
QWEN_PROCESSOR = SimpleNamespace(
    image_processor=SimpleNamespace(
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}, patch_size=14, merge_size=2
    )
)


def space_of(family, size):
    return get_adapter(family).box_space(QWEN_PROCESSOR, size)


def scores(name, completions, solutions, ctx=None, **params):
    out = call_reward(resolve_reward(name, **params), completions, solutions, **(ctx or {}))
    return out.scores


# ----------------------------------------------------------------------------- coordinates
# Image 200 x 100, point (50, 25) in pixels. Qwen2.5-VL: smart_resize(100, 200) = 112 x 196
# (round(200/28) = 7, round(100/28) = 4 patches of 28), so x * 196/200 = 49, y * 112/100 = 28.
# The 0-1000 families: 50/200 * 1000 = 250, 25/100 * 1000 = 250.
HAND = {
    "qwen2_5_vl": (49.0, 28.0),
    "qwen2_vl": (250.0, 250.0),
    "qwen3_vl": (250.0, 250.0),
    "internvl": (250.0, 250.0),
    "gemma3": (250.0, 250.0),
    "smolvlm": (250.0, 250.0),
    "glm4v": (250.0, 250.0),
    "llava_onevision": (0.25, 0.25),  # 0-1 of the image
}


def test_every_family_has_a_hand_computed_case():
    assert set(HAND) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_point_mapping_by_hand(family):
    space = space_of(family, (200, 100))
    np.testing.assert_allclose(points_to_model([[50, 25]], space), [HAND[family]])
    np.testing.assert_allclose(points_from_model([HAND[family]], space), [[50, 25]])


def test_points_map_as_box_corners_and_only_scoring_leaves_them_unclamped():
    space = BoxSpace("abs_resized", (640, 480), (644, 476))
    pts = np.array([[3.5, 7.0], [639.0, 1.0]])
    box = to_model(np.hstack([pts[:1], pts[1:]]), space)[0]
    np.testing.assert_allclose(points_to_model(pts, space), [box[:2], box[2:]])
    outside = [[-50.0, 2000.0]]
    np.testing.assert_allclose(
        points_from_model(outside, space), [[0, 480]]
    )  # clamped by default, like boxes
    assert points_from_model(outside, space, clamp=False)[0][0] < 0
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        points_to_model([[1, 2, 3]], space)


@settings(max_examples=200, deadline=None)
@given(
    family=st.sampled_from(FAMILIES),
    w=st.integers(8, 2000),
    h=st.integers(8, 2000),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
)
def test_rounded_round_trip_within_one_pixel(family, w, h, fx, fy):
    """Models write integers; mapping back costs at most half a model unit (<= 1 px unless the
    processor downscaled the image by more than 2x)."""
    if max(w, h) / min(w, h) > 150:
        return
    space = space_of(family, (w, h))
    point = np.array([[fx * w, fy * h]])
    back = points_from_model(round_boxes(points_to_model(point, space), space), space)
    assert np.all(np.abs(back - point) <= max(1.0, round_trip_error(space)) + 1e-9)


@settings(max_examples=300, deadline=None)
@given(
    family=st.sampled_from(FAMILIES),
    w=st.integers(8, 3000),
    h=st.integers(8, 3000),
    box=st.lists(st.floats(0, 1), min_size=4, max_size=4),
    at=st.lists(st.sampled_from([0.0, 1.0]) | st.floats(0, 1), min_size=2, max_size=2),
)
def test_a_point_inside_the_box_as_the_model_sees_it_scores_inside(family, w, h, box, at):
    """Any point a model writes inside the box it sees (edges included) maps back inside the
    true box, for every family: the reward cannot fault a correct click for the mapping."""
    if max(w, h) / min(w, h) > 150:
        return
    space = space_of(family, (w, h))
    x1, x2 = sorted([box[0] * w, box[1] * w])
    y1, y2 = sorted([box[2] * h, box[3] * h])
    mx1, my1, mx2, my2 = to_model([[x1, y1, x2, y2]], space)[0]
    point = [mx1 + at[0] * (mx2 - mx1), my1 + at[1] * (my2 - my1)]
    completion = f"<answer>{json.dumps(point)}</answer>"
    ctx = {"box_spaces": [space]}
    assert scores("point_in_box", [completion], [[x1, y1, x2, y2]], ctx) == [1.0]
    assert scores("point_distance", [completion], [[x1, y1, x2, y2]], ctx) == [1.0]


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("answer", "point"),
    [
        ("[12, 34]", (12, 34)),
        ("[12.5, -3]", (12.5, -3)),
        ('{"point_2d": [12, 34]}', (12, 34)),
        ('[{"point_2d": [12, 34], "label": "the OK button"}]', (12, 34)),
        ('{"click": [7, 8]}', (7, 8)),
        ('{"click": "(7, 8)"}', (7, 8)),
        ('{"action": "left_click", "coordinate": [5, 6]}', (5, 6)),
        ('{"name": "computer_use", "arguments": {"coordinate": [5, 6]}}', (5, 6)),
        ('{"x": 9, "y": 10}', (9, 10)),
        ('["12", "34"]', (12, 34)),
        ("(12,34)", (12, 34)),
        ("The button is at (120, 45), top left.", (120, 45)),
        ("click(x=11, y=22)", (11, 22)),
        ('```json\n{"point_2d": [1, 2]}\n```', (1, 2)),
        ("[[3, 4], [5, 6]]", (3, 4)),
    ],
)
def test_parse_point_reads_the_common_forms(answer, point):
    parsed = parse_point(answer)
    assert parsed.status == "ok" and parsed.point == point


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (None, "no_answer"),
        ("   ", "empty"),
        ("None", "none"),
        ("[1, 2, 3, 4]", "malformed"),  # a box is not a point
        ('{"bbox_2d": [1, 2, 3, 4]}', "malformed"),
        ("[NaN, 1]", "malformed"),
        ("[1e400, 2]", "malformed"),
        ("[true, false]", "malformed"),
        ("the blue square", "malformed"),
        ("[" * 5000, "malformed"),
        ("1, " * 20_000, "too_long"),
    ],
)
def test_parse_point_never_raises_and_says_why(answer, status):
    parsed = parse_point(answer)
    assert parsed.point is None and parsed.status == status


# ----------------------------------------------------------------------------- rewards
# Image 200 x 100 in 0-1000 units: x_model = 5 x_px, y_model = 10 y_px. Box [20, 10, 60, 50] px.
NORM = {"box_spaces": [BoxSpace("norm1000", (200, 100))]}
BOX = "[20, 10, 60, 50]"
DIAGONAL = (200**2 + 100**2) ** 0.5


def answer(point):
    return f"<think>there</think><answer>{json.dumps(point)}</answer>"


@pytest.mark.parametrize(
    ("model_point", "inside", "shaped"),
    [
        ([200, 300], 1.0, 1.0),  # (40, 30) px: inside
        ([300, 500], 1.0, 1.0),  # (60, 50) px: the bottom-right corner, edges count
        ([100, 100], 1.0, 1.0),  # (20, 10) px: the top-left corner
        ([315, 540], 0.0, 1 - 5 / DIAGONAL),  # (63, 54) px: 3 right, 4 below -> 5 px away
        ([0, 300], 0.0, 1 - 20 / DIAGONAL),  # (0, 30) px: 20 px left of the box
    ],
)
def test_point_rewards_by_hand(model_point, inside, shaped):
    assert scores("point_in_box", [answer(model_point)], [BOX], NORM) == [inside]
    assert scores("point_distance", [answer(model_point)], [BOX], NORM) == [pytest.approx(shaped)]


def test_point_distance_radius_and_its_check():
    out = scores("point_distance", [answer([315, 540])], [BOX], NORM, radius=0.1)
    assert out == [pytest.approx(1 - 5 / (0.1 * DIAGONAL))]
    far = scores("point_distance", [answer([1000, 1000])], [BOX], NORM, radius=0.1)
    assert far == [0.0]  # clipped at 0
    with pytest.raises(RewardConfigError, match="radius"):
        scores("point_distance", [answer([1, 1])], [BOX], NORM, radius=0)


def test_a_point_off_the_image_is_not_pulled_into_a_box_on_the_edge():
    """Clamped, (-10, 30) px would become (0, 30): on the left edge of this box."""
    on_edge = "[0, 10, 60, 50]"
    assert scores("point_in_box", [answer([-50, 300])], [on_edge], NORM) == [0.0]
    assert scores("point_in_box", [answer([0, 300])], [on_edge], NORM) == [1.0]


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "[40, 30]",  # no <answer> tag
        "<answer>no idea</answer>",
        "<answer>[100, 100, 300, 500]</answer>",  # a box
        "<answer>[NaN, 300]</answer>",
        "<answer>" + "[" * 5000 + "</answer>",
    ],
)
def test_garbage_scores_zero(completion):
    assert scores("point_in_box", [completion], [BOX], NORM) == [0.0]
    assert scores("point_distance", [completion], [BOX], NORM) == [0.0]


def test_solution_forms_and_missing_context():
    solutions = [BoxSolution(((20.0, 10.0, 60.0, 50.0),), (None,)), [20, 10, 60, 50], "garbage"]
    completions = [answer([40, 30])] * 3
    # No box space: the point is read as pixels; no image size: distance shaping is in-or-out.
    assert scores("point_in_box", completions, solutions) == [1.0, 1.0, 0.0]
    assert scores("point_distance", [answer([63, 54])], [BOX], {"image_sizes": [(200, 100)]}) == [
        pytest.approx(1 - 5 / DIAGONAL)
    ]
    assert scores("point_distance", [answer([63, 54])], [BOX]) == [0.0]


def test_details_say_where_the_click_landed():
    out = call_reward(resolve_reward("point_distance"), [answer([315, 540])], [BOX], **NORM)
    detail = out.details[0]
    assert detail["status"] == "ok" and not detail["inside"]
    assert detail["point"] == [pytest.approx(63), pytest.approx(54)]
    assert detail["distance"] == pytest.approx(5.0)


def test_accuracy_dispatches_point_samples():
    ctx = {**NORM, "task": ["point"], "accu_reward_method": [None]}
    out = call_reward(resolve_reward("accuracy"), [answer([315, 540])], [BOX], **ctx)
    assert out.scores == [0.0] and out.details[0]["method"] == "point_in_box"
    ctx["accu_reward_method"] = ["point_distance"]
    out = call_reward(resolve_reward("accuracy"), [answer([315, 540])], [BOX], **ctx)
    assert out.scores == [pytest.approx(1 - 5 / DIAGONAL)]
    # A method set in the config wins over the task's.
    ctx["accu_reward_method"] = [None]
    out = call_reward(
        resolve_reward("accuracy", method="point_distance"), [answer([315, 540])], [BOX], **ctx
    )
    assert out.details[0]["method"] == "point_distance"


# ----------------------------------------------------------------------------- data rows
def row(answer_text, method="point_in_box", **extra):
    return {
        "id": "p1",
        "conversations": [
            {"from": "human", "value": "Click the OK button."},
            {"from": "gpt", "value": answer_text},
        ],
        **({"accu_reward_method": method} if method else {}),
        **extra,
    }


def test_point_rows_are_read_as_point_samples(tmp_path):
    sample = parse_row(row("<answer>[20, 10, 60, 50]</answer>"), "f:1", tmp_path)
    assert sample.task == "point" and sample.reward_method == "point_in_box"
    assert sample.boxes.boxes == ((20.0, 10.0, 60.0, 50.0),)
    assert sample.answer_text() == "[20.0, 10.0, 60.0, 50.0]"
    by_task = parse_row(row("[1, 2, 3, 4]", method=None, task="point"), "f:2", tmp_path)
    assert by_task.task == "point" and by_task.reward_method is None
    distance = parse_row(row("[1, 2, 3, 4]", method="point_distance"), "f:3", tmp_path)
    assert distance.task == "point"


@pytest.mark.parametrize(
    ("answer_text", "problem"),
    [
        ("[12, 34]", "target's box"),
        ("click here", "target's box"),
        ("[60, 10, 20, 50]", "inverted"),
    ],
)
def test_bad_point_rows_name_the_field(tmp_path, answer_text, problem):
    with pytest.raises(DataError, match=r"conversations\[1\]\.value.*" + problem):
        parse_row(row(answer_text), "f:7", tmp_path)


# ----------------------------------------------------------------------------- metrics
def test_point_metrics_by_hand():
    truth = [np.array([[20.0, 10.0, 60.0, 50.0]])] * 4
    sizes = [(200, 100)] * 4
    predicted = [np.array([40.0, 30.0]), np.array([60.0, 50.0]), np.array([63.0, 54.0]), None]
    metrics, inside, distance = point_metrics(predicted, truth, sizes)
    assert inside.tolist() == [True, True, False, False]
    np.testing.assert_allclose(distance, [0, 0, 5 / DIAGONAL, 1])
    assert metrics["acc"] == 0.5
    assert metrics["mean_distance"] == pytest.approx((5 / DIAGONAL + 1) / 4)
    far, _, clipped = point_metrics([np.array([1e6, 1e6])], truth[:1], [None])
    assert far == {"acc": 0.0, "mean_distance": 1.0} and clipped.tolist() == [1.0]


# ----------------------------------------------------------------------------- SFT + eval
@pytest.fixture(scope="module")
def point_shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("point_shapes")
    return write_shapes(out, n_train=0, n_eval=10, seed=4, image_size="97..333", tasks=["point"])


@pytest.fixture(scope="module")
def processors(tiny_path):
    from transformers import AutoProcessor

    return {f: AutoProcessor.from_pretrained(tiny_path(f)) for f in FAMILIES}


def centre_oracle(adapter, processor, to_model_space=True):
    """Answers the centre of the target's box, rounded as the family writes it (or, with
    ``to_model_space=False``, in original pixels: the classic coordinate mistake)."""

    def generate(prompts):
        texts = []
        for p in prompts:
            x1, y1, x2, y2 = p.sample.boxes.boxes[0]
            centre = [[(x1 + x2) / 2, (y1 + y2) / 2]]
            if to_model_space:
                space = adapter.box_space(processor, p.image_size)
                centre = round_boxes(points_to_model(centre, space), space)
            written = as_written(centre[0] if to_model_space else np.round(centre[0]))
            texts.append(f"<think>I see it.</think><answer>{json.dumps(written)}</answer>")
        return texts

    return generate


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_oracle_clicking_the_centre_scores_perfectly(family, point_shapes, processors):
    adapter, processor = get_adapter(family), processors[family]
    samples = [
        s
        for split in ("point_eval_in", "point_eval_ood")
        for s in read_samples(str(point_shapes[split]))
    ]
    assert samples and all(s.task == "point" for s in samples)
    metrics, predictions = evaluate_samples(
        samples, adapter, processor, centre_oracle(adapter, processor)
    )
    assert metrics["point"]["acc"] == 1.0
    assert metrics["point"]["mean_distance"] == 0.0
    assert metrics["point"]["n"] == len(samples) and metrics["point"]["format_failure_rate"] == 0
    for p, s in zip(predictions, samples, strict=True):
        x1, y1, x2, y2 = s.boxes.boxes[0]
        assert p["inside"] and p["status"] == "ok" and p["distance"] == 0.0
        assert p["gt"] == [[x1, y1, x2, y2]]
        assert x1 <= p["pred"][0] <= x2 and y1 <= p["pred"][1] <= y2  # original pixels
    if adapter.coordinate_system == "norm1000":
        # The same centres written in original pixels miss: the coordinate mistake shows.
        wrong, _ = evaluate_samples(
            samples, adapter, processor, centre_oracle(adapter, processor, to_model_space=False)
        )
        assert wrong["point"]["acc"] < 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_target_is_the_centre_in_the_family_system(family, point_shapes, processors):
    from vlm_r1.sft import target_text

    adapter, processor = get_adapter(family), processors[family]
    for sample in read_samples(str(point_shapes["point_eval_in"])):
        size = get_image_size(sample)
        space = adapter.box_space(processor, size)
        prompt = PreparedPrompt(sample, {}, space, size, adapter)
        text = target_text(prompt, adapter, processor, think=True)
        assert text.startswith("<think>") and text.endswith("</answer>")
        parsed, point = predicted_point(text, space)
        assert parsed.status == "ok"  # written as the family rounds (integers; 0-1: 3 d.p.)
        assert parsed.point == tuple(round_boxes(np.array([parsed.point]), space)[0])
        x1, y1, x2, y2 = sample.boxes.boxes[0]
        bound = max(1.0, round_trip_error(space)) + 1e-9
        assert abs(point[0] - (x1 + x2) / 2) <= bound and abs(point[1] - (y1 + y2) / 2) <= bound
        assert x1 <= point[0] <= x2 and y1 <= point[1] <= y2
        reward = call_reward(
            resolve_reward("point_in_box"), [text], [sample.solution], box_spaces=[space]
        )
        assert reward.scores == [1.0]


def get_image_size(sample: Sample):
    from PIL import Image

    with Image.open(sample.images[0]) as image:
        return image.size
