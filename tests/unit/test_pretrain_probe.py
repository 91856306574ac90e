"""scripts/pretrain_probe.py: its derived task is a valid row on the same scene, its naming
score reads the answer block, and bad stages are refused."""

from __future__ import annotations

import json
import random

import pytest
from scripts_import import load_script

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.demo.derived import write_derived


@pytest.fixture(scope="module")
def probe():
    return load_script("pretrain_probe")


def derived(probe, folder, task: str, row_fn) -> tuple[list[dict], list]:
    """Six ``task`` rows as ``shapes`` writes them, and the samples ``row_fn`` derives from them."""
    source = write_shapes(folder, 6, 0, 0, "112", [task], 2.0)[f"{task}_train"]
    target = folder / "derived.jsonl"
    write_derived(source, target, row_fn)
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    return rows, list(read_samples(str(target)))


def test_ident_rows_ask_for_the_single_objects_colour_and_shape(probe, tmp_path):
    located, samples = derived(probe, tmp_path, "locate", probe.as_ident)
    assert [s.task for s in samples] == ["qa"] * 6
    for row, sample in zip(located, samples, strict=True):
        shape, colour = row["objects"][0][:2]
        assert sample.question == probe.IDENT_QUESTION
        assert sample.solution == f"{colour} {shape}"
        assert row["expression"]["text"] == f"the {colour} {shape}"


def test_match_rows_ask_about_the_target_or_a_foil_no_object_is(probe, tmp_path):
    named, samples = derived(probe, tmp_path, "named", probe.as_match)
    assert [s.solution for s in samples] == ["yes", "no"] * 3
    for row, sample in zip(named, samples, strict=True):
        words = sample.question.split()
        colour, shape = words[3], words[4]
        assert sample.question == probe.MATCH_QUESTION.format(colour=colour, shape=shape)
        present = [tuple(o[:2]) for o in row["objects"]]
        assert ((shape, colour) in present) == (sample.solution == "yes")
        if sample.solution == "yes":
            assert (shape, colour) == tuple(row["objects"][row["target"]][:2])


def test_match_foils_share_both_words_with_the_scene_when_it_allows(probe):
    rng = random.Random(0)
    crossed = [
        ["square", "red", "small", [0, 0, 9, 9]],
        ["triangle", "blue", "large", [20, 20, 60, 60]],
    ]
    for _ in range(20):  # only a red triangle or a blue square fits both words
        assert probe.match_foil(crossed, rng) in {("red", "triangle"), ("blue", "square")}
    alone = [["star", "green", "small", [0, 0, 9, 9]]]  # no pair fits both: one word must
    for _ in range(20):
        colour, shape = probe.match_foil(alone, rng)
        assert (colour == "green") != (shape == "star")


def test_echo_rows_repeat_the_named_words(probe, tmp_path):
    named, samples = derived(probe, tmp_path, "named", probe.as_echo)
    for row, sample in zip(named, samples, strict=True):
        shape, colour = row["objects"][row["target"]][:2]
        assert sample.question == f"{probe.ECHO_QUESTION}the {colour} {shape}."
        assert sample.solution == f"{colour} {shape}"


def test_naming_hits_read_the_answer_block_word_by_word(probe):
    think = "<think>a purple diamond?</think>"
    assert probe.naming_hits(think + "<answer>purple diamond</answer>", "purple diamond") == (
        True,
        True,
    )
    assert probe.naming_hits(think + "<answer>red diamond</answer>", "purple diamond") == (
        False,
        True,
    )
    # the think block and substrings do not count
    assert probe.naming_hits(think + "<answer>squares</answer>", "purple square") == (False, False)
    assert probe.naming_hits("purple diamond", "purple diamond") == (False, False)


def test_stages_parse_and_bad_ones_are_refused_naming_the_part(probe):
    assert probe.parse_stages("locate+named:400,rec_mix:800") == [
        (["locate", "named"], 400),
        (["rec_mix"], 800),
    ]
    for bad in ("locate", "locate:0", "locate:x", "nope:10", ":10", "locate:10,rec:5"):
        with pytest.raises(ValueError, match="--stages"):
            probe.parse_stages(bad)


def test_model_changes_parse_into_the_demo_recipe_and_bad_ones_are_refused(probe):
    from vlm_r1.models.tiny.recipes import TINY_SIZES

    recipe = probe.parse_model("layers=8,vision_hidden=256")
    assert (recipe.layers, recipe.vision_hidden) == (8, 256)
    assert recipe.hidden == TINY_SIZES["demo"].hidden
    for bad in ("layers", "layers=0", "layers=x", "depth=8", "layers=8,", "=8"):
        with pytest.raises(ValueError, match="--model"):
            probe.parse_model(bad)


def test_question_first_moves_the_text_before_the_images(probe):
    from vlm_r1.models.registry import get_adapter

    adapter = get_adapter("qwen3_vl")
    reordered = probe.question_first(type(adapter).messages)
    turns = reordered(adapter, 2, "Find the red circle.", system="Be brief.")
    assert turns[0]["role"] == "system"
    assert turns[-1]["content"] == [
        {"type": "text", "text": "Find the red circle."},
        {"type": "image"},
        {"type": "image"},
    ]
    assert adapter.messages(2, "x")[-1]["content"][0] == {"type": "image"}  # not patched here


def test_tower_stage_parses_only_alone(probe):
    assert probe.parse_stages("tower:2000,locate:400") == [(["tower"], 2000), (["locate"], 400)]
    with pytest.raises(ValueError, match="tower alone"):
        probe.parse_stages("tower+locate:400")


def test_notmatch_answers_yes_only_when_the_named_word_fits_and_the_negated_one_does_not(
    probe, tmp_path
):
    located, samples = derived(probe, tmp_path, "locate", probe.as_notmatch)
    assert [s.solution for s in samples] == ["yes", "no", "yes", "no", "yes", "no"]
    for row, sample in zip(located, samples, strict=True):
        shape, colour = row["objects"][0][:2]
        words = sample.question.split("?")[0].split()
        asked, negated = words[4], words[-1]
        fits = asked in (shape, colour) and negated not in (shape, colour)
        assert (sample.solution == "yes") == fits, sample.question
