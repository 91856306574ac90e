"""Pretraining tasks made from a shapes task's rows, for the base's stages.

- ``negation``: the ``rec_mix`` rows whose expression is a negation. Added to a stage beside
  ``rec_mix``, those rows are seen twice as often: negation was the kind probes' bases grounded
  worst (1 of 10 with every other kind past 0.79).
- ``match1``: a ``locate`` scene's single object asked "Is there a red square in the image?",
  about itself ("yes") or, every other row, about itself with the colour or the shape changed
  ("no"). A yes/no answer pays only for matching both words to what the image shows; probes
  found a language model that learned it first went on to ground every kind but negation
  (``docs/demo_history.md``).

Each rule is a pure function of a row, seeded by the row's id, so the same rows derive the
same task on every machine.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vlm_r1.data.shapes.world import COLOURS, SHAPES

MATCH_QUESTION = "Is there a {colour} {shape} in the image? Answer yes or no."


@dataclass(frozen=True)
class Derived:
    #: The shapes task whose rows it is made from.
    source: str
    #: What it makes of them, in words: the base's recipe records it.
    rule: str
    #: One source row to the derived row, or ``None`` to leave it out.
    row: Callable[[dict], dict | None]


def qa_row(row: dict, task: str, question: str, answer: str) -> dict:
    """A question about ``row``'s image, as the ``task`` row derived from it (a ``qa`` row:
    trained on its answer, scored by exact match)."""
    return {
        "id": task + "-" + row["id"].split("-", 1)[1],
        "image": row["image"],
        "task": "qa",
        "conversations": [
            {"from": "human", "value": "<image>" + question},
            {"from": "gpt", "value": answer},
        ],
    }


def as_match1(row: dict) -> dict:
    """A ``locate`` row (one object) asked whether it is itself ("yes") or, for every other row,
    the same object with one word changed, the colour or the shape by turns ("no")."""
    rng = random.Random(zlib.crc32(row["id"].encode()))
    number = int(row["id"].rsplit("-", 1)[1])
    shape, colour = row["objects"][0][:2]
    answer = "yes" if number % 2 == 0 else "no"
    if number % 4 == 1:
        colour = rng.choice([c for c in COLOURS if c != colour])
    elif number % 4 == 3:
        shape = rng.choice([s for s in SHAPES if s != shape])
    return qa_row(row, "match1", MATCH_QUESTION.format(colour=colour, shape=shape), answer)


def negation_row(row: dict) -> dict | None:
    return row if row.get("kind") == "negation" else None


DERIVED = {
    "negation": Derived("rec_mix", "its rows of kind negation", negation_row),
    "match1": Derived(
        "locate", "is the object a {colour} {shape}: itself, or one word changed; yes/no", as_match1
    ),
}


def write_derived(source: Path, target: Path, rule: Callable[[dict], dict | None]) -> None:
    """``rule`` applied to every row of ``source``, the rows it keeps written as ``target``."""
    with open(source, encoding="utf-8") as rows:
        derived = [rule(json.loads(line)) for line in rows]
    target.write_text(
        "".join(json.dumps(row) + "\n" for row in derived if row is not None), encoding="utf-8"
    )


def write_derived_splits(
    data: Path, name: str, source: str, rule: Callable[[dict], dict | None]
) -> None:
    """Task ``name`` under ``data``, made by ``rule`` from each split of ``source`` that is
    there (``{source}_{split}.jsonl`` -> ``{name}_{split}.jsonl``)."""
    for split in ("train", "eval_in", "eval_ood"):
        rows = data / f"{source}_{split}.jsonl"
        if rows.is_file():
            write_derived(rows, data / f"{name}_{split}.jsonl", rule)
