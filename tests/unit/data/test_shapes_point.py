"""The shapes world's point task: "Click the blue square." names one object, and the row's
solution is that object's box; in-domain and out-of-domain splits differ as REC's do."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import (
    COLOURS,
    HELD_OUT,
    OOD_KINDS,
    SHAPES,
    SPLITS,
    Expression,
    Obj,
    generate,
    resolve,
    write_shapes,
)

IN_DOMAIN = re.compile(
    rf"Click the (?:(small|large) )?({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\."
)


@pytest.fixture(scope="module")
def point_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("point")
    written = write_shapes(
        out, n_train=40, n_eval=30, seed=7, image_size="112..300", tasks=["point"]
    )
    assert sorted(written) == [f"point_{split}" for split in sorted(SPLITS)]
    return out


def rows(path):
    return [json.loads(line) for line in open(path)]


def objects(row):
    return [Obj(shape, colour, size, tuple(box)) for shape, colour, size, box in row["objects"]]


@pytest.mark.parametrize("split", SPLITS)
def test_the_solution_is_the_named_objects_box(point_dir, split):
    path = point_dir / f"point_{split}.jsonl"
    samples = list(read_samples(str(path)))
    for row, sample in zip(rows(path), samples, strict=True):
        scene, target = objects(row), row["target"]
        assert row["task"] == "point" and row["accu_reward_method"] == "point_in_box"
        assert sample.task == "point" and sample.reward_method == "point_in_box"
        assert sample.boxes.boxes == (tuple(float(v) for v in scene[target].box),)
        expr = Expression(**row["expression"])
        assert resolve(expr, scene, (row["width"], row["height"])) == [target]
        assert sample.question == f"Click {expr.text}."
        if split == "eval_ood":
            assert row["kind"] in OOD_KINDS
        else:
            match = IN_DOMAIN.fullmatch(sample.question)
            assert match, sample.question
            size, colour, shape = match.groups()
            named = scene[target]
            assert (colour, shape) == (named.colour, named.shape)
            assert (colour, shape) not in HELD_OUT
            same = [o for o in scene if (o.colour, o.shape) == (colour, shape)]
            # The size word is there exactly when the colour and shape alone are ambiguous.
            assert (size is not None) == (len(same) > 1)


def test_ood_prefers_held_out_targets_and_reasoning_kinds(point_dir):
    ood = rows(point_dir / "point_eval_ood.jsonl")
    held = sum((o[1], o[0]) in HELD_OUT for r in ood for o in [r["objects"][r["target"]]])
    assert held > 0
    assert {r["kind"] for r in ood} <= set(OOD_KINDS)
    assert len({r["kind"] for r in ood}) > 1


def test_the_named_object_is_drawn_at_its_box_centre(point_dir):
    """In-domain shapes are filled: the box centre (where the oracle clicks) has its colour."""
    for row in rows(point_dir / "point_eval_in.jsonl"):
        target = row["objects"][row["target"]]
        x1, y1, x2, y2 = target[3]
        pixels = np.asarray(Image.open(point_dir / row["image"]).convert("RGB"))
        assert tuple(pixels[(y1 + y2) // 2, (x1 + x2) // 2]) == COLOURS[target[1]]


def texts(task, seed, n=12):
    return [(r.question, r.answer) for r in generate(task, "train", n, seed, (112, 200))]


def test_point_records_are_deterministic_per_seed():
    assert texts("point", 1) == texts("point", 1) != texts("point", 2)
