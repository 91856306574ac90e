import pytest

from vlm_r1.parsing import (
    extract_answer,
    is_well_formed_boxes,
    parse_boxes,
    parse_choice,
    parse_number,
    parse_yes_no,
)


def test_extract_answer_takes_the_last_closed_block():
    parsed = extract_answer("<think>hmm</think><answer>1</answer> then <answer>2</answer>")
    assert parsed.think == "hmm" and parsed.answer == "2" and parsed.status == "ok"
    assert extract_answer("no tags").status == "no_answer"
    assert extract_answer("no tags", require_tag=False).answer == "no tags"
    assert extract_answer("<answer> </answer>").status == "empty"


@pytest.mark.parametrize(
    "text, boxes, labels",
    [
        ('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]\n```', [(1, 2, 3, 4)], ["cat"]),
        (
            '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox_2d": [5, 6, 7, 8], "label": "dog"}] trailing words',
            [(1, 2, 3, 4), (5, 6, 7, 8)],
            ["cat", "dog"],
        ),
        ("[1, 2, 3, 4]", [(1, 2, 3, 4)], [None]),
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [(1, 2, 3, 4), (5, 6, 7, 8)], [None, None]),
        ('{"bbox_2d": [1.5, 2, 3, 4]', [(1.5, 2, 3, 4)], [None]),  # truncated JSON, repaired
        ("The box is (10, 20, 30, 40).", [(10, 20, 30, 40)], [None]),  # not JSON at all
    ],
)
def test_parse_boxes_forms(text, boxes, labels):
    parsed = parse_boxes(text)
    assert parsed.status == "ok"
    assert [b.box for b in parsed.boxes] == boxes
    assert [b.label for b in parsed.boxes] == labels


@pytest.mark.parametrize(
    "text, status",
    [
        (None, "no_answer"),
        ("", "empty"),
        ("None", "none"),
        ("```json\n[]\n```", "none"),
        ("I cannot tell", "malformed"),
        ("[NaN, 1, 2, 3]", "malformed"),
        ("[1e999, 1, 2, 3]", "malformed"),
        ("x" * 40000, "too_long"),
    ],
)
def test_parse_boxes_statuses(text, status):
    assert parse_boxes(text).status == status


def test_scalar_parsers():
    assert parse_number("about 1,234.5 apples, no wait 7") == 7.0
    assert parse_number("inf") is None and parse_number("1e999") is None
    assert parse_choice("I think (B) is right") == "B"
    assert parse_choice("Answer: C.") == "C"
    assert parse_choice("Banana") is None
    assert parse_yes_no("Yes.") == "yes" and parse_yes_no("nope") is None


# Answers the strict reading (detection rewards) refuses, each one the lenient reading
# above salvages a box from. The first two are rollouts GRPO with the AP reward wrote in the
# demo's `--full` run, for which the lenient reading paid AP 0.9 and 1.0.
BROKEN_ANSWERS = [
    '[{"bbox_2d": [116, 179, 625, 652], ": 9hexagon"}], ": {": 670, {": [179], "}70, d": {": 634]',
    '[{"bbox_2d": [116, 170, 625, 661], ": lly"circle"}]',
    '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}] trailing words',  # JSON, then more text
    "[1, 2, 3, 4]",  # a box without a label
    '[{"bbox_2d": [1, 2, 3, 4]}]',  # no label
    '[{"bbox_2d": ["1", 2, 3, 4], "label": "cat"}]',  # a coordinate that is a string
    '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, [5, 6, 7, 8]]',  # one item not an object
    '{"bbox_2d": [1, 2, 3, 4], "label": "cat"}',  # an object, not a list of them
    '{"bbox_2d": [1.5, 2, 3, 4]',  # truncated
    "The box is (10, 20, 30, 40).",
]


@pytest.mark.parametrize("text", BROKEN_ANSWERS)
def test_the_strict_reading_refuses_what_the_lenient_one_salvages(text):
    assert parse_boxes(text).boxes  # the lenient reading finds a box...
    strict = parse_boxes(text, strict=True)
    assert strict.status == "malformed" and strict.boxes == []  # ...the strict one none


@pytest.mark.parametrize(
    "text, boxes, labels",
    [
        ('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]\n```', [(1, 2, 3, 4)], ["cat"]),
        ('[{"bbox_2d": [1, 2.5, 3, 4], "label": " cat "}]', [(1, 2.5, 3, 4)], ["cat"]),
        (  # fenced JSON with words around the fence: VLM-R1 reads the fence alone
            'Here:\n```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"},'
            ' {"bbox_2d": [5, 6, 7, 8], "label": "b", "score": 0.5}]\n``` done',
            [(1, 2, 3, 4), (5, 6, 7, 8)],
            ["a", "b"],
        ),
        ("<|begin_of_box|>[1, 2, 3, 4]<|end_of_box|>", [(1, 2, 3, 4)], [None]),  # GLM's markup
        ("<ref>cat</ref><box>[[1, 2, 3, 4]]</box>", [(1, 2, 3, 4)], ["cat"]),  # InternVL's
    ],
)
def test_the_strict_reading_takes_well_formed_answers(text, boxes, labels):
    strict = parse_boxes(text, strict=True)
    assert strict.status == "ok"
    assert [b.box for b in strict.boxes] == boxes
    assert [b.label for b in strict.boxes] == labels
    assert strict.boxes == parse_boxes(text).boxes  # the same boxes as the lenient reading


@pytest.mark.parametrize("text", ["None", "none.", "```json\n[]\n```", "[]"])
def test_the_strict_reading_takes_an_explicit_no_objects_answer(text):
    assert parse_boxes(text, strict=True).status == "none"
    assert is_well_formed_boxes(text)


def test_well_formed_means_what_the_strict_reading_takes():
    assert is_well_formed_boxes('[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]')
    assert not any(is_well_formed_boxes(text) for text in BROKEN_ANSWERS)
    assert not is_well_formed_boxes(None) and not is_well_formed_boxes("")
