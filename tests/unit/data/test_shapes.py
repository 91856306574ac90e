import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import (
    HELD_OUT,
    IN_DOMAIN_KINDS,
    OOD_KINDS,
    Expression,
    Obj,
    generate,
    parse_image_size,
    resolve,
    write_shapes,
)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    write_shapes(out, n_train=60, n_eval=30, seed=3, image_size="112..300")
    return out


def _rows(path):
    return [json.loads(line) for line in open(path)]


def test_round_trip_through_the_reader_gives_the_generated_boxes(shapes_dir):
    for task in ("rec", "ovd", "count"):
        for split in ("train", "eval_in", "eval_ood"):
            path = shapes_dir / f"{task}_{split}.jsonl"
            rows = _rows(path)
            samples = list(read_samples(str(path)))
            assert len(samples) == len(rows) > 0
            for row, sample in zip(rows, samples, strict=True):
                assert sample.task == task
                assert sample.images == (str(shapes_dir / row["image"]),)
                if task == "rec":
                    target = row["objects"][row["target"]]
                    assert sample.solution.boxes == (tuple(float(v) for v in target[3]),)
                elif task == "ovd":
                    expected = [
                        tuple(float(v) for v in o[3])
                        for o in row["objects"]
                        if o[0] in row["categories"]
                    ]
                    assert list(sample.solution.boxes) == expected
                    assert all(lab in row["categories"] for lab in sample.solution.labels)
                else:
                    assert sample.solution == row["conversations"][1]["value"]
                    assert sample.reward_method == "count"


def test_referents_are_unique_and_ood_kinds_never_in_train():
    kinds = {}
    for split in ("train", "eval_in", "eval_ood"):
        seen = Counter()
        for record in generate("rec", split, 700, seed=11, image_size=(112, 320)):
            expr = Expression(**record.meta["expression"])
            assert resolve(expr, record.scene, record.image_size) == [record.meta["target"]]
            seen[expr.kind] += 1
        kinds[split] = seen
    assert set(kinds["train"]) == set(IN_DOMAIN_KINDS) == set(kinds["eval_in"])
    assert set(kinds["eval_ood"]) == set(OOD_KINDS)
    assert not set(kinds["train"]) & set(kinds["eval_ood"])


def test_held_out_combinations_only_out_of_domain(shapes_dir):
    def combos(split):
        return {
            (o[1], o[0])
            for task in ("rec", "ovd", "count")
            for row in _rows(shapes_dir / f"{task}_{split}.jsonl")
            for o in row["objects"]
        }

    assert not combos("train") & HELD_OUT and not combos("eval_in") & HELD_OUT
    assert combos("eval_ood") & HELD_OUT


def test_boxes_are_the_drawn_pixels(shapes_dir):
    """In-domain backgrounds are flat, so each shape's pixels must span exactly its box."""
    for row in _rows(shapes_dir / "rec_train.jsonl")[:20]:
        pixels = np.asarray(Image.open(shapes_dir / row["image"]))
        background = pixels[0, 0]
        for _, _, _, (x1, y1, x2, y2) in row["objects"]:
            crop = pixels[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2]
            ys, xs = np.nonzero((crop != background).any(-1))
            ox, oy = max(0, x1 - 2), max(0, y1 - 2)
            assert abs(xs.min() + ox - x1) <= 1 and abs(xs.max() + 1 + ox - x2) <= 1
            assert abs(ys.min() + oy - y1) <= 1 and abs(ys.max() + 1 + oy - y2) <= 1


def test_deterministic_for_a_seed(tmp_path):
    a = write_shapes(tmp_path / "a", 8, 4, seed=5, tasks=["rec", "ovd"])
    b = write_shapes(tmp_path / "b", 8, 4, seed=5, tasks=["rec", "ovd"])
    c = write_shapes(tmp_path / "c", 8, 4, seed=6, tasks=["rec"])
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes()
    assert (tmp_path / "a/images/train/rec_000003.png").read_bytes() == (
        tmp_path / "b/images/train/rec_000003.png"
    ).read_bytes()
    assert a["rec_train"].read_bytes() != c["rec_train"].read_bytes()


def test_resolve_known_scene():
    scene = [
        Obj("circle", "red", "small", (10, 10, 30, 30)),
        Obj("circle", "blue", "large", (60, 10, 110, 60)),
        Obj("square", "red", "small", (130, 10, 150, 30)),
    ]
    size = (200, 100)
    assert resolve(Expression("attribute", "", "circle", "blue"), scene, size) == [1]
    assert resolve(
        Expression(
            "relation",
            "",
            "circle",
            None,
            None,
            "left of",
            {"shape": "square", "colour": None, "size": None},
        ),
        scene,
        size,
    ) == [0, 1]
    assert resolve(Expression("superlative", "", None, None, direction="right"), scene, size) == [2]
    assert resolve(
        Expression("ordinal", "", None, None, direction="left", rank=1), scene, size
    ) == [1]
    assert resolve(Expression("negation", "", "circle", negated="red"), scene, size) == [1]
    assert resolve(Expression("superlative", "", None, None, direction="largest"), scene, size) == [
        1
    ]


def test_image_size_spec():
    assert parse_image_size("224") == (224, 224)
    assert parse_image_size("112..448") == (112, 448)
    with pytest.raises(ValueError, match="MIN..MAX"):
        parse_image_size("big")
    with pytest.raises(ValueError, match="32..4096"):
        parse_image_size("448..112")


def test_object_scale_grows_objects_and_keeps_referents_unique():
    def mean_side(scale):
        sides = []
        for record in generate(
            "rec", "train", 150, seed=5, image_size=(112, 112), object_scale=scale
        ):
            expr = Expression(**record.meta["expression"])
            assert resolve(expr, record.scene, record.image_size) == [record.meta["target"]]
            assert len(record.scene) >= 2
            sides += [(o.box[2] - o.box[0]) / record.image_size[0] for o in record.scene]
        return float(np.mean(sides))

    assert mean_side(2.0) > 1.6 * mean_side(1.0)
    with pytest.raises(ValueError, match="object_scale"):
        write_shapes("/nonexistent", 1, 1, object_scale=5.0)


def test_rec_mix_has_every_kind_in_both_styles_and_keeps_held_out_pairs_out_of_train(tmp_path):
    """The pretraining mix covers what narrow post-training on ``rec`` leaves out (every
    expression kind, the textured style), but held-out colour-shape pairs stay unseen."""
    records = list(generate("rec_mix", "train", 400, seed=2, image_size=(112, 112)))
    kinds = Counter(r.meta["kind"] for r in records)
    assert set(kinds) == set(IN_DOMAIN_KINDS) | set(OOD_KINDS)
    assert min(kinds.values()) >= 20, kinds
    styles = Counter(r.style for r in records)
    assert set(styles) == {"flat", "textured"} and min(styles.values()) >= 150, styles
    for record in records:
        expr = Expression(**record.meta["expression"])
        assert resolve(expr, record.scene, record.image_size) == [record.meta["target"]]
        assert not {(o.colour, o.shape) for o in record.scene} & HELD_OUT
    paths = write_shapes(tmp_path, 12, 2, seed=2, image_size="112", tasks=["rec_mix"])
    rows = _rows(paths["rec_mix_train"])
    assert all(r["task"] == "rec" and r["style"] in ("flat", "textured") for r in rows)
    for row in rows:  # the style drawn is the style written: flat images have one background
        pixels = np.asarray(Image.open(tmp_path / row["image"]))
        corners = {tuple(pixels[y, x]) for y in (0, -1) for x in (0, -1)}
        assert (len(corners) == 1) == (row["style"] == "flat"), row["id"]


def test_rec_negation_has_only_negations_that_resolve_to_their_target_in_both_styles():
    """``rec_negation``: every row a negation ("the square that is not green") that picks out
    its target and excludes an object that shares its shape or colour; held-out pairs stay out
    of ``train``, and out of domain the split's own scenes (3-6 objects) are used."""
    records = list(generate("rec_negation", "train", 200, seed=3, image_size=(112, 112)))
    assert {r.meta["kind"] for r in records} == {"negation"}
    styles = Counter(r.style for r in records)
    assert set(styles) == {"flat", "textured"} and min(styles.values()) >= 70, styles
    forms = Counter("that is not a " in r.meta["expression"]["text"] for r in records)
    assert min(forms.values()) >= 20, forms  # both "not <colour>" and "not a <shape>"
    for record in records:
        expr = Expression(**record.meta["expression"])
        assert resolve(expr, record.scene, record.image_size) == [record.meta["target"]]
        target = record.scene[record.meta["target"]]
        negated = [o for o in record.scene if expr.negated in (o.colour, o.shape)]
        assert negated and expr.negated not in (target.colour, target.shape)
        assert not {(o.colour, o.shape) for o in record.scene} & HELD_OUT
    ood = list(generate("rec_negation", "eval_ood", 20, seed=3, image_size=(112, 112)))
    assert {r.meta["kind"] for r in ood} == {"negation"}
    assert all(3 <= len(r.scene) <= 6 for r in ood)


def test_rec_mix_rows_stay_as_the_shipped_demo_base_saw_them():
    """The demo's shipped base was trained on ``rec_mix`` rows: a change to their generation
    (a new task kind placed before it, a reordered draw) would silently part the shipped
    weights from their recipe. The digest is of the first 20 rows as generated when it shipped."""
    digest = hashlib.sha256()
    for record in generate("rec_mix", "train", 20, seed=0, image_size=(112, 112), object_scale=2):
        digest.update((record.question + record.answer + str(record.style)).encode())
    assert digest.hexdigest() == "7844ba839bf5745a7a101bec7d26f4325c59ebe61e9c24051082f723283f966d"


def test_named_targets_are_told_apart_only_by_colour_and_shape_words(tmp_path):
    """``named``: REC whose expression is the target's colour and shape (a size word only when
    another object shares both), among 2-5 objects; the other objects differ in identity."""
    records = list(generate("named", "train", 200, seed=4, image_size=(112, 112)))
    assert all(r.task == "rec" and 2 <= len(r.scene) <= 5 for r in records)
    for record in records:
        target = record.scene[record.meta["target"]]
        name = f"{target.colour} {target.shape}"
        expr = Expression(**record.meta["expression"])
        assert expr.text in (f"the {name}", f"the {target.size} {name}")
        assert record.question.endswith(f"{expr.text}.") and "Please provide" in record.question
        assert json.loads(record.answer) == list(target.box)
        assert resolve(expr, record.scene, record.image_size) == [record.meta["target"]]
    # the size word is there exactly when another object has the target's colour and shape
    for record in records:
        target = record.scene[record.meta["target"]]
        twins = [o for o in record.scene if (o.colour, o.shape) == (target.colour, target.shape)]
        assert (len(twins) > 1) == (record.meta["expression"]["size"] is not None)
    ood = list(generate("named", "eval_ood", 60, seed=4, image_size=(112, 112)))
    assert {r.meta["kind"] for r in ood} <= set(OOD_KINDS)
    paths = write_shapes(tmp_path, 3, 0, seed=4, image_size="112", tasks=["named"])
    samples = list(read_samples(str(paths["named_train"])))
    assert [s.task for s in samples] == ["rec"] * 3


def test_existing_tasks_keep_their_split_styles(tmp_path):
    """Adding styles must not change ``rec``: in-domain images flat, out-of-domain textured."""
    write_shapes(tmp_path, 3, 3, seed=1, image_size="112", tasks=["rec"])
    for split, flat in (("train", True), ("eval_in", True), ("eval_ood", False)):
        for row in _rows(tmp_path / f"rec_{split}.jsonl"):
            assert "style" not in row
            pixels = np.asarray(Image.open(tmp_path / row["image"]))
            corners = {tuple(pixels[y, x]) for y in (0, -1) for x in (0, -1)}
            assert (len(corners) == 1) == flat
