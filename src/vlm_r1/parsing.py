"""Parse model completions: ``<think>``/``<answer>`` parts, boxes, points, numbers, choices,
yes/no.

Every function here *never raises* on any string and returns a typed result with a ``status``,
so a reward built on it cannot crash training and the monitors can say *why* a reward was 0.
Lenient JSON goes through ``json_repair`` (a real lenient parser) rather than regexes; one regex
fallback picks up bare ``[x1, y1, x2, y2]`` lists that are not valid JSON at all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import json_repair

ParseStatus = Literal["ok", "no_answer", "empty", "none", "malformed", "too_long"]

#: Answers longer than this are not parsed (no grounding answer is this long; keeps rewards fast).
MAX_ANSWER_CHARS = 32_768
#: At most this many boxes are read from one answer (COCO's maxDets is 100).
MAX_BOXES = 300

_BARE_BOX_RE = re.compile(
    r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\])]"
)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?")
_BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d", "coordinates")
_LABEL_KEYS = ("label", "name", "category", "class")
_SCORE_KEYS = ("score", "confidence", "conf")
#: Keys naming the image a box lies in, numbered from 1 in prompt order (multi-image answers).
_IMAGE_KEYS = ("image", "image_index")


@dataclass(frozen=True)
class AnswerParse:
    """The parts of a completion. ``answer`` is the text of the last ``<answer>`` block."""

    think: str | None
    answer: str | None
    status: ParseStatus


class ParsedBox(NamedTuple):
    """One box as the model wrote it (model coordinates), with its label, score and the
    number of the image it lies in (1 = the first image; ``None``: not said, i.e. image 1)."""

    box: tuple[float, float, float, float]
    label: str | None = None
    score: float = 1.0
    image: int | None = None


@dataclass(frozen=True)
class BoxesParse:
    boxes: list[ParsedBox] = field(default_factory=list)
    status: ParseStatus = "ok"


def _between(text: str, open_tag: str, close_tag: str, last: bool) -> str | None:
    """Text inside ``open_tag...close_tag`` (the first pair, or the last closed one), in linear time."""
    if last:
        end = text.rfind(close_tag)
        start = text.rfind(open_tag, 0, end) if end >= 0 else -1
    else:
        start = text.find(open_tag)
        end = text.find(close_tag, start + len(open_tag)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return text[start + len(open_tag) : end]


def extract_answer(completion: str, require_tag: bool = True) -> AnswerParse:
    """Split a completion into think and answer; without a tag, ``require_tag=False`` uses it all.

    The answer is the last closed ``<answer>...</answer>`` block. Plain string search, not
    regexes, so a megabyte of unclosed tags costs linear time.
    """
    think = _between(completion, "<think>", "</think>", last=False)
    think = think.strip() if think is not None else None
    answer = _between(completion, "<answer>", "</answer>", last=True)
    if answer is not None:
        answer = answer.strip()
        return AnswerParse(think, answer, "ok" if answer else "empty")
    if require_tag:
        return AnswerParse(think, None, "no_answer")
    text = completion.strip()
    return AnswerParse(think, text, "ok" if text else "empty")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            out = float(value)
        except OverflowError:
            return None
        return out if math.isfinite(out) else None
    if isinstance(value, str):
        try:
            out = float(value.strip())
        except (ValueError, OverflowError):
            return None
        return out if math.isfinite(out) else None
    return None


_PLAIN_NUMBERS = (int, float)  # exact types: bool is excluded on purpose


def _as_box(value: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    a, b, c, d = value
    if (
        type(a) in _PLAIN_NUMBERS
        and type(b) in _PLAIN_NUMBERS
        and type(c) in _PLAIN_NUMBERS
        and type(d) in _PLAIN_NUMBERS
    ):  # fast path: well-formed JSON numbers
        try:
            box = (float(a), float(b), float(c), float(d))
        except OverflowError:  # ints beyond float range
            return None
        finite = (
            math.isfinite(box[0])
            and math.isfinite(box[1])
            and math.isfinite(box[2])
            and math.isfinite(box[3])
        )
        return box if finite else None
    coords = [_finite(v) for v in value]
    if all(x is not None for x in coords):
        return tuple(coords)  # type: ignore[return-value]
    return None


def _image_number(value: Any) -> int | None:
    """An image number as written (``2``, ``2.0``, ``"2"``); anything else is ``0``, a number
    no image has, so the box still counts as an answer but can match nothing."""
    number = _finite(value)
    return int(number) if number is not None and number == int(number) else 0


def _box_fields(data: dict) -> tuple[str | None, float, int | None]:
    """Label, score and image number of a box dict (defaults: no label, 1.0, not said)."""
    label = data.get("label")
    if not isinstance(label, str):
        label = next((data[k] for k in _LABEL_KEYS if isinstance(data.get(k), str)), None)
    score, image = 1.0, None
    for key in _SCORE_KEYS:
        if key in data and (value := _finite(data[key])) is not None:
            score = value
            break
    for key in _IMAGE_KEYS:
        if key in data:
            image = _image_number(data[key])
            break
    return ((label.strip() or None) if label else None), score, image


def boxes_from_json(data: Any, out: list[ParsedBox], depth: int = 0) -> None:
    """Collect boxes from parsed JSON: dicts with a box key, bare 4-lists, nested lists."""
    if depth > 8 or len(out) >= MAX_BOXES:
        return
    if isinstance(data, dict):
        for key in _BOX_KEYS:
            if key in data and (box := _as_box(data[key])) is not None:
                out.append(ParsedBox(box, *_box_fields(data)))
                return
        for value in data.values():
            if isinstance(value, (list, dict)):
                boxes_from_json(value, out, depth + 1)
    elif isinstance(data, (list, tuple)):
        box = _as_box(data)
        if box is not None:
            out.append(ParsedBox(box))
            return
        for item in data[:MAX_BOXES]:
            # Fast path for the common VLM-R1 answer, a list of {"bbox_2d": [...], "label": ...}.
            if type(item) is dict and (box := _as_box(item.get("bbox_2d"))) is not None:
                if len(out) < MAX_BOXES:
                    label = item.get("label")
                    if len(item) == 2 and type(label) is str:  # just a box and a label
                        out.append(ParsedBox(box, label.strip() or None, 1.0))
                    else:
                        out.append(ParsedBox(box, *_box_fields(item)))
                continue
            boxes_from_json(item, out, depth + 1)


def lenient_json(text: str) -> Any:
    """Strict ``json`` first (C speed for well-formed answers), then ``json_repair``."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return json_repair.loads(text)
    except (ValueError, TypeError, RecursionError, IndexError, KeyError, AttributeError):
        return None


def _strip_code_fence(text: str) -> str:
    """The inside of the first Markdown code fence (```json ... ```), or the text itself."""
    start = text.find("```")
    if start < 0:
        return text
    body = start + 3
    if text[body : body + 4].lower() == "json":
        body += 4
    end = text.find("```", body)
    return text[body : end if end >= 0 else len(text)].strip()


#: Spans that mark boxes in a family's own answer syntax: GLM-4.1V's special tokens
#: (zai-org/GLM-V README, "Grounding") and InternVL's ``<box>`` (InternVL2 docs, "Grounding").
_NATIVE_BOX_SPANS = (("<|begin_of_box|>", "<|end_of_box|>"), ("<box>", "</box>"))
# A number that is not part of a word ("x1" in a "[x1, y1, x2, y2]" template is not one).
_SPAN_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


def _ref_label(text: str, box_start: int) -> str | None:
    """The ``<ref>label</ref>`` right before the ``<box>`` at ``box_start`` (whitespace between)."""
    before = text[:box_start].rstrip()
    if not before.endswith("</ref>"):
        return None
    start = before.rfind("<ref>")
    label = before[start + 5 : -6].strip() if start >= 0 else ""
    return label or None


def _span_boxes(span: str, label: str | None) -> list[ParsedBox]:
    """Boxes inside one marked span: JSON objects with a box key (their fields kept), else the
    span's numbers four at a time, whatever the brackets; none when the count is not a multiple
    of four (GLM also boxes final answers such as ``B`` or ``3``)."""
    found: list[ParsedBox] = []
    if "{" in span:
        boxes_from_json(lenient_json(span), found)
    if found:
        return [b._replace(label=label) if b.label is None and label else b for b in found]
    values = [_finite(n) for n in _SPAN_NUMBER_RE.findall(span, 0, MAX_ANSWER_CHARS)]
    if not values or len(values) % 4 or any(v is None for v in values):
        return []
    return [ParsedBox(tuple(values[i : i + 4]), label) for i in range(0, len(values), 4)]  # type: ignore[arg-type]


def native_boxes(text: str) -> list[ParsedBox]:
    """Boxes a model wrote in its family's own markup, in order; empty if there is none.

    GLM-4.1V marks each box with ``<|begin_of_box|>...<|end_of_box|>``, the brackets inside
    varying (``[..]``, ``[[..]]``, ``(..)``, ``<..>``), inside ``<answer>`` or not (zai-org/GLM-V
    README). InternVL writes ``<ref>label</ref><box>[[x1, y1, x2, y2], ...]</box>``; every box
    of the span gets the label. An unclosed last span runs to the end of the text.
    """
    found: list[ParsedBox] = []
    for open_tag, close_tag in _NATIVE_BOX_SPANS:
        start = text.find(open_tag)
        while start >= 0 and len(found) < MAX_BOXES:
            body = start + len(open_tag)
            end = text.find(close_tag, body)
            label = _ref_label(text, start) if open_tag == "<box>" else None
            found += _span_boxes(text[body : end if end >= 0 else len(text)], label)
            start = text.find(open_tag, end + len(close_tag)) if end >= 0 else -1
    return found[:MAX_BOXES]


def _json_number_box(value: Any) -> tuple[float, float, float, float] | None:
    """Four finite JSON numbers (no strings, no booleans), else ``None``."""
    if type(value) is not list or len(value) != 4:
        return None
    if not all(type(v) in _PLAIN_NUMBERS for v in value):
        return None
    return _as_box(value)


def _labelled_box(item: Any) -> ParsedBox | None:
    """One well-formed answer item: an object with a box key holding four numbers and a
    non-empty label (plus, optionally, a score and an image number)."""
    if type(item) is not dict:
        return None
    box = next((b for k in _BOX_KEYS if (b := _json_number_box(item.get(k))) is not None), None)
    if box is None:
        return None
    label, score, image = _box_fields(item)
    return ParsedBox(box, label, score, image) if label is not None else None


def strict_json_boxes(text: str) -> list[ParsedBox] | None:
    """The boxes of exactly the answer the detection prompt asks for: a JSON list (nothing
    before or after it) of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` objects; ``None``
    when the text is anything else, or when one item of the list is not such an object."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if type(data) is not list:
        return None
    boxes = []
    for item in data[:MAX_BOXES]:
        box = _labelled_box(item)
        if box is None:
            return None
        boxes.append(box)
    return boxes


def parse_boxes(answer: str | None, strict: bool = False) -> BoxesParse:
    """Boxes from an answer: VLM-R1 JSON (``[{"bbox_2d": [...], "label": ...}]``), bare
    ``[x1, y1, x2, y2]``, lists of lists; code fences and trailing text tolerated.

    ``strict`` reads only a well-formed answer: the inside of the first ```json fence (or the
    whole answer when it has none) must be VLM-R1's JSON list of labelled boxes
    (``strict_json_boxes``), or the answer a family's own box markup (GLM-4.1V, InternVL). The
    lenient reading salvages boxes from broken JSON and free text, which is right for
    evaluating an answer and wrong for rewarding one: a policy learns to write the first box
    and garbage after it (the demo's detection ablation did, in 4 of 6 runs).

    Status ``none`` means the model explicitly answered "None" (no objects), ``malformed`` that
    text was there but no box could be read.
    """
    if answer is None:
        return BoxesParse([], "no_answer")
    if len(answer) > MAX_ANSWER_CHARS:
        return BoxesParse([], "too_long")
    text = _strip_code_fence(answer.strip())
    if not text:
        return BoxesParse([], "empty")
    if text.strip("\"'. ").lower() in {"none", "null", "[]", "no objects", "nothing"}:
        return BoxesParse([], "none")
    if native := native_boxes(text):  # GLM-4.1V / InternVL box markup
        return BoxesParse(native, "ok")
    if strict:
        boxes = strict_json_boxes(text)
        if boxes is None:
            return BoxesParse([], "malformed")
        return BoxesParse(boxes, "ok" if boxes else "none")
    found: list[ParsedBox] = []
    boxes_from_json(lenient_json(text), found)
    if not found:
        for match in _BARE_BOX_RE.finditer(text):
            box = _as_box(list(match.groups()))
            if box is not None:
                found.append(ParsedBox(box))
            if len(found) >= MAX_BOXES:
                break
    return BoxesParse(found[:MAX_BOXES], "ok" if found else "malformed")


def is_well_formed_boxes(answer: str | None) -> bool:
    """Whether a detection answer is what the prompt asks for (boxes or an explicit "None"
    under the strict reading): what the strict detection rewards can pay for."""
    return parse_boxes(answer, strict=True).status in ("ok", "none")


_COORD = r"(-?\d+(?:\.\d+)?)"
# "[x, y]" or "(x, y)": exactly two numbers between brackets (a 4-number box does not match).
_BARE_POINT_RE = re.compile(r"[\[(]\s*" + _COORD + r"\s*,\s*" + _COORD + r"\s*[\])]")
# "x=12, y=34" / "x: 12, y: 34" (click(x=..., y=...) calls).
_XY_POINT_RE = re.compile(r"\bx\s*[=:]\s*" + _COORD + r"\s*,\s*y\s*[=:]\s*" + _COORD)
_POINT_KEYS = ("point_2d", "point", "click", "coordinate", "coordinates", "position")


@dataclass(frozen=True)
class PointParse:
    """The first point ``(x, y)`` an answer holds, as the model wrote it (model coordinates)."""

    point: tuple[float, float] | None = None
    status: ParseStatus = "ok"


def _as_point(value: Any) -> tuple[float, float] | None:
    """``[x, y]`` (numbers or numeric strings), or a string holding ``(x, y)`` / ``[x, y]``."""
    if isinstance(value, str):
        match = _BARE_POINT_RE.search(value[:MAX_ANSWER_CHARS])
        value = list(match.groups()) if match else None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    x, y = _finite(value[0]), _finite(value[1])
    return (x, y) if x is not None and y is not None else None


def point_from_json(data: Any, depth: int = 0) -> tuple[float, float] | None:
    """The first point in parsed JSON: a point key (``point_2d``, ``click``, ``coordinate``...),
    an object with numeric ``x`` and ``y``, a bare ``[x, y]``, searched depth first."""
    if depth > 8:
        return None
    if isinstance(data, dict):
        for key in _POINT_KEYS:
            if key in data and (point := _as_point(data[key])) is not None:
                return point
        if "x" in data and "y" in data:
            x, y = _finite(data["x"]), _finite(data["y"])
            if x is not None and y is not None:
                return x, y
        items = list(data.values())
    elif isinstance(data, (list, tuple)):
        if (point := _as_point(data)) is not None:
            return point
        items = list(data[:MAX_BOXES])
    else:
        return None
    for item in items:
        if isinstance(item, (list, tuple, dict)):
            point = point_from_json(item, depth + 1)
            if point is not None:
                return point
    return None


def parse_point(answer: str | None) -> PointParse:
    """The point of a click answer: JSON ``[x, y]``, ``{"point_2d": [x, y]}``,
    ``{"click": [x, y]}``, ``{"coordinate": [x, y]}`` (computer-use actions), ``{"x": .., "y":
    ..}``, or in text the first ``(x, y)`` / ``[x, y]`` (Qwen style) or ``x=.., y=..``; code
    fences and surrounding words tolerated. Never raises.

    Status ``none``: the model explicitly answered "None"; ``malformed``: text without a point
    (a 4-number box is not a point)."""
    if answer is None:
        return PointParse(None, "no_answer")
    if len(answer) > MAX_ANSWER_CHARS:
        return PointParse(None, "too_long")
    text = _strip_code_fence(answer.strip())
    if not text:
        return PointParse(None, "empty")
    if text.strip("\"'. ").lower() in {"none", "null", "[]", "nothing"}:
        return PointParse(None, "none")
    point = point_from_json(lenient_json(text))
    if point is None:
        for pattern in (_BARE_POINT_RE, _XY_POINT_RE):
            match = pattern.search(text)
            if match is not None and (point := _as_point(list(match.groups()))) is not None:
                break
    return PointParse(point, "ok" if point is not None else "malformed")


def parse_number(text: str | None) -> float | None:
    """The last finite number in the text (thousands separators allowed), or ``None``."""
    if not text or len(text) > MAX_ANSWER_CHARS:
        return None
    for match in reversed(_NUMBER_RE.findall(text)):
        value = _finite(match.replace(",", ""))
        if value is not None:
            return value
    return None


_CHOICE_RE = re.compile(r"(?<![A-Za-z])\(?([A-E])\)?(?![A-Za-z])")


def parse_choice(text: str | None) -> str | None:
    """A multiple-choice letter A-E: the only one, or the last one mentioned."""
    if not text or len(text) > MAX_ANSWER_CHARS:
        return None
    choices = _CHOICE_RE.findall(text.strip())
    return choices[-1] if choices else None


_YES_NO_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str | None) -> str | None:
    """``"yes"``/``"no"``, from the first such word, or ``None``."""
    if not text or len(text) > MAX_ANSWER_CHARS:
        return None
    match = _YES_NO_RE.search(text)
    return match.group(1).lower() if match else None


def solution_text(solution: Any) -> str:
    """The gold answer as text: the inside of ``<answer>`` if present (VLM-R1 wraps it)."""
    text = solution if isinstance(solution, str) else str(solution)
    inner = extract_answer(text).answer
    return inner if inner is not None else text.strip()
