"""Read VLM-R1 data: JSONL conversations and processed REC JSON files, streamed.

Compatible with VLM-R1's ``grpo_jsonl.py`` inputs::

    data_paths="a.jsonl:b.jsonl"  image_folders="imgs_a:imgs_b"  reward_methods="default:odLength"

Rows: ``id``, ``image`` (string or list: multi-image), ``conversations`` (human then gpt turn,
``<image>`` placeholders), optional ``accu_reward_method`` (the row's wins over the file's) and
our optional ``task``. Everything else is kept in ``Sample.meta``.

Lines are parsed one at a time (a 100k-line file costs the memory of one line); images are
checked here (``check_images``: ``header`` opens each file's header, ``exists`` only checks the
path, ``none`` skips) and decoded when used (``load_sample_images``). Any problem raises ``DataError`` naming file,
line, field and value, or, with ``on_error="skip"``, skips the row and counts it by reason.

Data is untrusted input (``RowRules``): a row's reward method may name only a registered reward
or one the config declared (no code import, no LLM judge by data alone); images over
``max_image_pixels`` (from the header) and questions/answers over ``max_text_chars`` are
rejected before anything is decoded or tokenised; inverted ground-truth boxes are errors.
Files may start with a UTF-8 BOM.

Every source's rows pass one validator, ``sample_from_fields``: a reader only takes a row's
raw values out of its shape (``RowFields``, with the names its errors should use) and shares
``RowReader``'s ``on_error`` handling; ``hf_datasets`` reads ``datasets`` sources that way.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_r1.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageError, image_size, load_image
from vlm_r1.data.sample import DETECTION_METHODS, POINT_METHODS, TASKS, BoxSolution, Sample
from vlm_r1.errors import UserFacingError
from vlm_r1.parsing import ParsedBox, parse_boxes, parse_number, solution_text

logger = logging.getLogger(__name__)

_IMAGE_PLACEHOLDER = "<image>"
_COUNT_QUESTION = re.compile(r"\bhow many\b", re.IGNORECASE)
#: Default ``data.max_text_chars``: longer questions/answers are bad data (checked untokenised).
DEFAULT_MAX_TEXT_CHARS = 100_000


class DataError(UserFacingError, ValueError):
    """A bad data row: the message names file, line, field and the offending value."""

    def __init__(
        self,
        where: str,
        field_name: str,
        problem: str,
        value: Any = None,
        reason: str = "bad_value",
    ):
        shown = repr(value)
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        super().__init__(f"{where}: field '{field_name}': {problem} (value: {shown})")
        self.reason = reason


@dataclass
class ReadStats:
    """What a read produced: rows read, and rows skipped by reason (``on_error="skip"``)."""

    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.skipped:
            return f"read {self.read} samples"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"read {self.read} samples, skipped {sum(self.skipped.values())} ({parts})"


def _split(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, (str, os.PathLike)):
        return [p for p in str(spec).split(":") if p]
    return [str(p) for p in spec]


def infer_task(question: str, solution: str, method: str | None) -> str:
    """Our task for a VLM-R1 row: detection methods -> ovd; point methods (``point_in_box``,
    ``point_distance``) -> point; a single box answer -> rec; a bare integer answer to a
    "how many" question -> count; anything else -> qa."""
    if method in DETECTION_METHODS:
        return "ovd"
    if method in POINT_METHODS:
        return "point"
    parsed = parse_boxes(solution_text(solution))
    if parsed.status == "ok" and len(parsed.boxes) == 1 and parsed.boxes[0].label is None:
        return "rec"
    if parsed.status == "ok" and all(b.label for b in parsed.boxes):
        return "ovd"
    if _COUNT_QUESTION.search(question) and re.fullmatch(r"\s*\d+\s*", solution_text(solution)):
        return "count"
    return "qa"


IMAGE_CHECKS = ("none", "exists", "header")


@dataclass(frozen=True)
class RowRules:
    """What a row may hold; the defaults equal ``DataConfig``'s. ``allowed_methods``: the custom
    rewards / judge the config declared (``rewards.registry.declared_methods``)."""

    check_images: str = "header"
    allowed_methods: frozenset[str] = frozenset()
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS


def _check_image(
    path: str, name: str, where: str, rules: RowRules, field_name: str = "image"
) -> None:
    """``exists``: the file is there; ``header``: it also opens as an image of an accepted
    size (cheap, no decode)."""
    if rules.check_images == "none":
        return
    if not os.path.isfile(path):
        raise DataError(where, field_name, f"image file not found: {path}", name, "missing_image")
    if rules.check_images == "header":
        try:
            image_size(path, rules.max_image_pixels)
        except ImageError as err:
            raise DataError(where, field_name, str(err), name, err.reason) from err


def _text(value: str, where: str, field_name: str, limit: int) -> str:
    if len(value) > limit:
        raise DataError(
            where,
            field_name,
            f"is {len(value)} characters, above the limit of {limit} (data.max_text_chars)",
            value,
            "text_too_long",
        )
    return value


def _upright_boxes(boxes: Sequence[Sequence[float]], where: str, field_name: str, value: Any):
    for box in boxes:
        x1, y1, x2, y2 = box
        if x2 < x1 or y2 < y1:
            raise DataError(
                where,
                field_name,
                f"box {list(box)} is inverted (x2 < x1 or y2 < y1; expected [x1, y1, x2, y2])",
                value,
                "inverted_box",
            )


def _images(
    raw: Any, where: str, folder: Path, rules: RowRules, field_name: str = "image"
) -> tuple[str, ...]:
    """A row's image path(s), relative ones under ``folder``, each checked per ``rules``."""
    if raw is None:
        return ()
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataError(
            where, field_name, "must be a path or a non-empty list of paths", raw, "wrong_type"
        )
    paths = tuple(str(folder / n) for n in names)
    for name, path in zip(names, paths, strict=True):
        _check_image(path, name, where, rules, field_name)
    return paths


def _turns(row: dict, where: str) -> tuple[Any, Any]:
    """The raw human and gpt values of a JSONL row (their types and sizes are checked by
    ``sample_from_fields``, as for every source)."""
    conversations = row.get("conversations")
    if conversations is None:
        raise DataError(
            where,
            "conversations",
            "missing (expected a human turn and a gpt turn)",
            None,
            "missing_field",
        )
    if not isinstance(conversations, list) or len(conversations) < 2:
        raise DataError(
            where,
            "conversations",
            "must be a list of at least 2 turns",
            conversations,
            "wrong_type",
        )
    for i in (0, 1):
        if not isinstance(conversations[i], dict) or "value" not in conversations[i]:
            raise DataError(
                where,
                f"conversations[{i}]",
                "must be an object with a 'value'",
                conversations[i],
                "wrong_type",
            )
    return conversations[0]["value"], conversations[1]["value"]


def known_method(
    method: Any, where: str, allowed: Collection[str], field_name: str = "accu_reward_method"
) -> str | None:
    """The row's reward method if data may name it (``check_data_method``: nothing imported)."""
    if method is None:
        return None
    if not isinstance(method, str) or not method:
        raise DataError(where, field_name, "must be a non-empty string", method, "wrong_type")
    from vlm_r1.rewards.registry import RewardConfigError, RewardNotAllowed, check_data_method

    try:
        check_data_method(method, allowed)
    except RewardNotAllowed as err:
        raise DataError(where, field_name, str(err), method, "method_not_allowed") from err
    except RewardConfigError as err:
        raise DataError(where, field_name, str(err), method, "bad_value") from err
    return method


@dataclass(frozen=True)
class FieldNames:
    """What errors call each field of a row: a JSONL row's question is
    ``conversations[0].value``, a ``datasets`` row's is its column's name."""

    question: str = "conversations[0].value"
    answer: str = "conversations[1].value"
    image: str = "image"
    method: str = "accu_reward_method"
    task: str = "task"
    id: str = "id"


JSONL_NAMES = FieldNames()


@dataclass(frozen=True)
class RowFields:
    """One row's raw values, taken out of whatever shape its source has, before any check.

    ``images``: a path or a list of paths (relative ones are under the source's image folder);
    ``id``: the source's own default already applied (``file:line`` for JSONL)."""

    question: Any
    answer: Any
    id: Any
    images: Any = None
    method: Any = None
    task: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    names: FieldNames = JSONL_NAMES


def sample_from_fields(
    fields: RowFields,
    where: str,
    image_folder: Path,
    file_method: str | None = None,
    rules: RowRules = RowRules(),
) -> Sample:
    """The one validator every source's rows pass (raises ``DataError`` naming ``where`` and
    the field by its source's name): types, text limits, images, reward method, task, answer."""
    names = fields.names
    human, gpt = fields.question, fields.answer
    if not isinstance(human, str):
        raise DataError(where, names.question, "must be a string", human, "wrong_type")
    if isinstance(gpt, bool) or not isinstance(gpt, (str, int, float)):
        raise DataError(where, names.answer, "must be a string or a number", gpt, "wrong_type")
    _text(human, where, names.question, rules.max_text_chars)
    gpt = _text(str(gpt), where, names.answer, rules.max_text_chars)
    images = _images(fields.images, where, image_folder, rules, names.image)
    placeholders = human.count(_IMAGE_PLACEHOLDER)
    if placeholders and placeholders != len(images):
        raise DataError(
            where,
            names.question,
            f"has {placeholders} <image> placeholders but the row has {len(images)} images",
            human,
            "bad_value",
        )
    method = known_method(fields.method or file_method, where, rules.allowed_methods, names.method)
    question = human.replace(_IMAGE_PLACEHOLDER, "").strip()
    task = fields.task or infer_task(question, gpt, method)
    if task not in TASKS:
        raise DataError(where, names.task, f"must be one of {TASKS}", task, "bad_value")
    solution = _solution(gpt, task, where, names.answer, len(images))
    if isinstance(fields.id, bool) or not isinstance(fields.id, (str, int)):
        raise DataError(where, names.id, "must be a string or an integer", fields.id, "wrong_type")
    return Sample(str(fields.id), images, question, solution, task, method, where, fields.meta)


def _image_numbers(
    boxes: Sequence[ParsedBox], num_images: int, where: str, field_name: str, value: Any
) -> tuple[int, ...]:
    """The boxes' image numbers (``"image": k``, 1 = the first image) when any box names one,
    else ``()``; a number the row has no image for is a ``DataError``."""
    if all(b.image is None for b in boxes):
        return ()
    numbers = tuple(1 if b.image is None else b.image for b in boxes)
    for number in numbers:
        if not 1 <= number <= max(num_images, 1):
            raise DataError(
                where,
                field_name,
                f'a box names "image": {number}, but the row has {num_images} image(s) '
                "(numbered from 1)",
                value,
                "bad_value",
            )
    return numbers


def _solution(
    gpt: str, task: str, where: str, field_name: str, num_images: int = 1
) -> BoxSolution | str:
    """The answer text as the task needs it: boxes for rec/ovd (upright, with the image each
    lies in for multi-image rows), the target's box for point, a number for count."""
    solution = solution_text(gpt)
    if task == "point":
        parsed = parse_boxes(solution)
        if not parsed.boxes:
            raise DataError(
                where,
                field_name,
                "a point task's answer must be the target's box [x1, y1, x2, y2] in image pixels",
                gpt,
                "bad_value",
            )
        box = parsed.boxes[0].box
        _upright_boxes([box], where, field_name, gpt)
        return BoxSolution((box,), (parsed.boxes[0].label,))
    if task in ("rec", "ovd"):
        parsed = parse_boxes(solution)
        if task == "rec" and not parsed.boxes:
            raise DataError(
                where, field_name, "a REC answer needs a box [x1, y1, x2, y2]", gpt, "bad_value"
            )
        if task == "ovd" and parsed.status not in ("ok", "none"):
            raise DataError(
                where, field_name, "no boxes or 'None' in the detection answer", gpt, "bad_value"
            )
        boxes = parsed.boxes[:1] if task == "rec" else parsed.boxes
        _upright_boxes([b.box for b in boxes], where, field_name, gpt)
        return BoxSolution(
            tuple(b.box for b in boxes),
            tuple(b.label for b in boxes),
            _image_numbers(boxes, num_images, where, field_name, gpt),
        )
    if task == "count" and parse_number(solution) is None:
        raise DataError(where, field_name, "a counting answer must be a number", gpt, "bad_value")
    return solution


_JSONL_KNOWN = frozenset({"id", "image", "images", "conversations", "accu_reward_method", "task"})


def parse_row(
    row: Any,
    where: str,
    image_folder: Path,
    file_method: str | None = None,
    rules: RowRules = RowRules(),
) -> Sample:
    """One VLM-R1 JSONL row -> ``Sample`` (raises ``DataError``)."""
    if not isinstance(row, dict):
        raise DataError(where, "<row>", "each line must be a JSON object", row, "wrong_type")
    human, gpt = _turns(row, where)
    fields = RowFields(
        question=human,
        answer=gpt,
        id=row.get("id", where),
        images=row.get("image", row.get("images")),
        method=row.get("accu_reward_method"),
        task=row.get("task"),
        meta={k: v for k, v in row.items() if k not in _JSONL_KNOWN},
    )
    return sample_from_fields(fields, where, image_folder, file_method, rules)


def _rec_record(record: Any, where: str, image_folder: Path, rules: RowRules) -> Sample:
    """A processed REC JSON record (``problem``, ``solution`` in absolute pixels, ``image``...)."""
    if not isinstance(record, dict):
        raise DataError(
            where, "<record>", "each record must be a JSON object", record, "wrong_type"
        )
    for name in ("image", "problem", "solution"):
        if name not in record:
            raise DataError(where, name, "missing", None, "missing_field")
    box = record["solution"]
    if not (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    ):
        raise DataError(where, "solution", "must be [x1, y1, x2, y2] in pixels", box, "wrong_type")
    _upright_boxes([box], where, "solution", box)
    if not isinstance(record["problem"], str):
        raise DataError(where, "problem", "must be a string", record["problem"], "wrong_type")
    _text(record["problem"], where, "problem", rules.max_text_chars)
    images = _images(record.get("image", record.get("images")), where, image_folder, rules)
    meta = {k: v for k, v in record.items() if k not in ("id", "image", "problem", "solution")}
    solution = BoxSolution((tuple(float(v) for v in box),), (None,))
    return Sample(
        str(record.get("id", where)),
        images,
        record["problem"].strip(),
        solution,
        "rec",
        None,
        where,
        meta,
    )


class RowReader:
    """What every reader of rows shares, whatever the source: the ``RowRules`` its rows are
    checked against, and what a bad row does (``on_error``: raise, or skip and count in
    ``stats``)."""

    def __init__(
        self,
        on_error: str = "raise",
        check_images: str = "header",
        allowed_methods: Collection[str] = (),
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ):
        if on_error not in ("raise", "skip"):
            raise DataError("<config>", "on_error", "must be 'raise' or 'skip'", on_error)
        self.on_error = on_error
        if check_images not in IMAGE_CHECKS:
            raise DataError(
                "<config>", "check_images", f"must be one of {IMAGE_CHECKS}", check_images
            )
        self.check_images = check_images
        allowed = frozenset(allowed_methods)
        self.rules = RowRules(check_images, allowed, max_image_pixels, max_text_chars)
        self.stats = ReadStats()

    def _handle(self, err: DataError) -> None:
        if self.on_error == "raise":
            raise err
        self.stats.skipped[err.reason] += 1
        self.stats.examples.setdefault(err.reason, str(err))

    def _log_skipped(self) -> None:
        if self.stats.skipped:
            logger.warning("%s", self.stats.summary())


class SampleReader(RowReader):
    """Iterate ``Sample``s from VLM-R1 JSONL (``.jsonl``) or processed REC JSON (``.json``).

    Re-iterable; each pass re-reads the files and resets ``stats``. ``allowed_methods``,
    ``max_image_pixels`` and ``max_text_chars``: see ``RowRules`` (defaults: built-in rewards
    only, and ``DataConfig``'s limits).
    """

    def __init__(
        self,
        data_paths: str | Sequence[str],
        image_folders: str | Sequence[str] | None = None,
        reward_methods: str | Sequence[str] | None = None,
        on_error: str = "raise",
        check_images: str = "header",
        allowed_methods: Collection[str] = (),
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ):
        super().__init__(on_error, check_images, allowed_methods, max_image_pixels, max_text_chars)
        self.paths = _split(data_paths)
        if not self.paths:
            raise DataError(
                "<config>", "data_paths", "no data file given", data_paths, "missing_field"
            )
        folders = _split(image_folders)
        if folders and len(folders) != len(self.paths):
            raise DataError(
                "<config>",
                "image_folders",
                f"{len(folders)} folders for {len(self.paths)} data files",
                image_folders,
            )
        self.folders = [Path(f) for f in folders] or [Path(p).parent for p in self.paths]
        methods = _split(reward_methods)
        if methods and len(methods) != len(self.paths):
            raise DataError(
                "<config>",
                "reward_methods",
                f"{len(methods)} methods for {len(self.paths)} data files",
                reward_methods,
            )
        for file_method in methods:
            known_method(file_method, "<config>", self.rules.allowed_methods, "reward_methods")
        self.methods: list[str | None] = list(methods) or [None] * len(self.paths)
        for path in self.paths:
            if not os.path.isfile(path):
                raise DataError(
                    "<config>", "data_paths", f"data file not found: {path}", path, "missing_file"
                )

    def __iter__(self) -> Iterator[Sample]:
        self.stats = ReadStats()
        for path, folder, method in zip(self.paths, self.folders, self.methods, strict=True):
            rows = self._json_records(path) if path.endswith(".json") else self._jsonl_rows(path)
            for where, row in rows:
                try:
                    sample = (
                        _rec_record(row, where, folder, self.rules)
                        if path.endswith(".json")
                        else parse_row(row, where, folder, method, self.rules)
                    )
                except DataError as err:
                    self._handle(err)
                    continue
                self.stats.read += 1
                yield sample
        self._log_skipped()

    def _jsonl_rows(self, path: str) -> Iterator[tuple[str, Any]]:
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as err:
                    self._handle(
                        DataError(
                            where,
                            "<line>",
                            f"not valid JSON ({err.msg} at column {err.colno})",
                            line.strip(),
                            "malformed_json",
                        )
                    )

    def _json_records(self, path: str) -> Iterator[tuple[str, Any]]:
        try:
            with open(path, encoding="utf-8-sig") as handle:
                records = json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{err.lineno}",
                "<file>",
                f"not valid JSON ({err.msg})",
                None,
                "malformed_json",
            ) from err
        if not isinstance(records, list):
            raise DataError(
                f"{path}:1",
                "<file>",
                "a processed REC file must hold a JSON list",
                type(records).__name__,
                "wrong_type",
            )
        for index, record in enumerate(records):
            yield f"{path}[{index}]", record


def load_sample_images(sample: Sample, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> list:
    """Decode a sample's images (header size checked first); a failure names the sample's
    file:line, the field and the path."""
    images = []
    for path in sample.images:
        try:
            images.append(load_image(path, max_pixels=max_pixels))
        except ImageError as err:
            raise DataError(
                sample.source or sample.id, "image", str(err), path, err.reason
            ) from err
    return images


def read_samples(
    data_paths: str | Sequence[str], image_folders: str | Sequence[str] | None = None, **kwargs: Any
) -> SampleReader:
    """Convenience: a ``SampleReader`` (iterate it; ``.stats`` says what was skipped)."""
    return SampleReader(data_paths, image_folders, **kwargs)
