"""`vlm-r1 eval` refuses impossible options and empty data by name, before loading a model."""

import json

import pytest

from vlm_r1.config import ConfigError
from vlm_r1.data.jsonl import DataError
from vlm_r1.eval.runner import evaluate_checkpoint


def not_a_model(*args, **kwargs):
    raise AssertionError("the model must not load")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"limit": 0}, "--limit=0 must be >= 1"),
        ({"limit": -1}, "--limit=-1 must be >= 1"),
        ({"batch_size": 0}, "--batch-size=0 must be >= 1"),
        ({"max_new_tokens": 0}, "--max-new-tokens=0 must be >= 1"),
        ({"convention": "coco"}, "--metric-convention='coco' is not allowed"),
    ],
)
def test_bad_options_fail_by_flag_name(monkeypatch, tmp_path, options, message):
    monkeypatch.setattr("vlm_r1.models.load_model", not_a_model)
    with pytest.raises(ConfigError) as info:
        evaluate_checkpoint("any", str(tmp_path / "x.jsonl"), **options)
    assert message in str(info.value)


def test_empty_data_is_an_error_not_an_empty_table(monkeypatch, tmp_path):
    monkeypatch.setattr("vlm_r1.models.load_model", not_a_model)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no samples to evaluate"):
        evaluate_checkpoint("any", str(empty))


def test_limit_draws_that_many(tmp_path):
    from vlm_r1.eval.runner import load_eval_samples

    rows = [{"id": i, "conversations": [{"value": "2+2?"}, {"value": str(i)}]} for i in range(5)]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_eval_samples(str(path), limit=3)) == 3
    assert len(load_eval_samples(str(path), limit=9)) == 5
