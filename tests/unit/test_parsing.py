import pytest

from vlm_r1.parsing import (
    extract_answer,
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
