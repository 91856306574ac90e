"""The base's derived pretraining tasks: valid rows on their source's scenes, with the answer the
scene gives."""

from __future__ import annotations

import json

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.data.shapes.spec import TASK_KINDS
from vlm_r1.demo.derived import DERIVED, MATCH_QUESTION, as_match1, write_derived
from vlm_r1.tracking import read_jsonl


def read_samples_image(folder, row) -> tuple[str, ...]:
    """The images a ``row`` of ``folder`` resolves to as a sample."""
    (sample,) = read_samples(str(write_rows(folder / "one.jsonl", [row])))
    return sample.images


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_single_object_match_rows_change_one_word_for_no(tmp_path):
    source = write_shapes(tmp_path, 8, 0, 0, "112", ["locate"], 2.0)["locate_train"]
    write_derived(source, tmp_path / "match1.jsonl", as_match1)
    located = read_jsonl(source)
    samples = list(read_samples(str(tmp_path / "match1.jsonl")))
    assert [s.task for s in samples] == ["qa"] * 8
    assert [s.solution for s in samples] == ["yes", "no"] * 4
    for number, (row, sample) in enumerate(zip(located, samples, strict=True)):
        assert sample.images == read_samples_image(tmp_path, row)
        colour, shape = sample.question.split()[3:5]
        assert sample.question == MATCH_QUESTION.format(colour=colour, shape=shape)
        same = (colour == row["objects"][0][1], shape == row["objects"][0][0])
        assert same == [(True, True), (False, True), (True, True), (True, False)][number % 4]
    # the same rows derive the same task again (each row's draw is seeded by its id)
    write_derived(source, tmp_path / "again.jsonl", as_match1)
    assert read_jsonl(tmp_path / "again.jsonl") == read_jsonl(tmp_path / "match1.jsonl")


def test_every_derived_task_names_a_shapes_source_and_a_rule():
    for name, task in DERIVED.items():
        assert task.source in TASK_KINDS and task.rule, name
