"""A dataset is untrusted input: it cannot run code, call the LLM judge, or exhaust memory."""

import json
import struct
import types
import zlib

import pytest
from PIL import Image

from vlm_r1.config import DataConfig, RewardTerm
from vlm_r1.data import images as image_module
from vlm_r1.data import jsonl
from vlm_r1.data.images import ImageError, image_size, load_image
from vlm_r1.data.jsonl import DataError, load_sample_images, read_samples
from vlm_r1.data.loading import load_training_samples
from vlm_r1.data.sample import Sample
from vlm_r1.eval.runner import _score_task, load_eval_samples
from vlm_r1.rewards import RewardConfigError, registry

QA = {
    "id": 1,
    "conversations": [
        {"from": "human", "value": "What colour is the sky?"},
        {"from": "gpt", "value": "blue"},
    ],
}
REC = {
    "id": 2,
    "image": "ok.png",
    "conversations": [
        {"from": "human", "value": "<image>Where is the mug?"},
        {"from": "gpt", "value": "[3, 4, 50, 60]"},
    ],
}


def write_jsonl(path, rows, prefix=""):
    path.write_text(prefix + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def payload(tmp_path):
    """A reward file whose import writes a marker: proof that data ran code."""
    marker = tmp_path / "PWNED"
    script = tmp_path / "evil.py"
    script.write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "def fn(completions, solutions, **ctx):\n    return [1.0] * len(completions)\n"
    )
    return types.SimpleNamespace(method=f"{script}:fn", marker=marker)


# --- per-row reward methods ---------------------------------------------------------------


def test_reader_refuses_a_custom_method_named_by_data(tmp_path, payload):
    path = write_jsonl(tmp_path / "d.jsonl", [QA, {**QA, "accu_reward_method": payload.method}])
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'accu_reward_method'.*not declared"):
        list(read_samples(str(path)))
    reader = read_samples(str(path), on_error="skip")
    assert len(list(reader)) == 1 and reader.stats.skipped == {"method_not_allowed": 1}
    assert not payload.marker.exists()


def test_reader_accepts_a_method_the_config_declared_without_importing_it(tmp_path, payload):
    path = write_jsonl(tmp_path / "d.jsonl", [{**QA, "accu_reward_method": payload.method}])
    allowed = registry.declared_methods([RewardTerm("accuracy", 1.0, {"method": payload.method})])
    (sample,) = read_samples(str(path), allowed_methods=allowed)
    assert sample.reward_method == payload.method and not payload.marker.exists()
    allowed = registry.declared_methods([RewardTerm("accuracy"), RewardTerm(payload.method)])
    assert len(list(read_samples(str(path), allowed_methods=allowed))) == 1


def test_per_file_reward_methods_follow_the_same_rule(tmp_path, payload):
    path = write_jsonl(tmp_path / "d.jsonl", [QA])
    with pytest.raises(DataError, match=r"field 'reward_methods'.*not declared"):
        read_samples(str(path), reward_methods=[payload.method])
    assert not payload.marker.exists()


@pytest.mark.parametrize("method", ["llm", "llm_judge"])
def test_data_cannot_switch_on_the_llm_judge(tmp_path, method):
    path = write_jsonl(tmp_path / "d.jsonl", [{**QA, "accu_reward_method": method}])
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'accu_reward_method'.*llm_judge"):
        list(read_samples(str(path)))
    for terms in (
        [RewardTerm("accuracy"), RewardTerm("llm_judge")],
        [RewardTerm("accuracy", 1.0, {"method": "llm"})],
    ):
        assert (
            len(list(read_samples(str(path), allowed_methods=registry.declared_methods(terms))))
            == 1
        )


def test_data_cannot_name_the_dispatcher_itself(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**QA, "accu_reward_method": "accuracy"}])
    with pytest.raises(DataError, match=r"field 'accu_reward_method'.*'accuracy'"):
        list(read_samples(str(path), allowed_methods={"accuracy"}))


def test_declared_methods_lists_only_customs_and_the_judge():
    terms = [
        RewardTerm("accuracy", 1.0, {"method": "pkg.mod:acc"}),
        RewardTerm("format"),
        RewardTerm("file.py:fn"),
        RewardTerm("llm"),
    ]
    assert registry.declared_methods(terms) == {"pkg.mod:acc", "file.py:fn", "llm_judge"}
    assert registry.declared_methods([RewardTerm("accuracy", 1.0, {"method": "rec_iou"})]) == set()


def test_training_reads_with_the_config_rule(tmp_path, payload):
    path = write_jsonl(tmp_path / "d.jsonl", [{**QA, "accu_reward_method": payload.method}])
    with pytest.raises(DataError, match="accu_reward_method"):
        load_training_samples(DataConfig(train=str(path)), True)
    declared = [RewardTerm("accuracy", 1.0, {"method": payload.method})]
    assert len(load_training_samples(DataConfig(train=str(path)), True, declared)) == 1
    assert not payload.marker.exists()


def test_eval_allows_built_in_methods_only(tmp_path, payload):
    path = write_jsonl(tmp_path / "d.jsonl", [{**QA, "accu_reward_method": payload.method}])
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'accu_reward_method'"):
        load_eval_samples(str(path))
    path = write_jsonl(tmp_path / "j.jsonl", [{**QA, "accu_reward_method": "llm"}])
    with pytest.raises(DataError, match="llm_judge"):
        load_eval_samples(str(path))
    # A sample that reaches scoring some other way is refused, never imported.
    sample = Sample("1", (), "q", "blue", "qa", payload.method, "x.jsonl:1")
    with pytest.raises(RewardConfigError, match="not declared"):
        _score_task("qa", [(types.SimpleNamespace(sample=sample), "<answer>blue</answer>")], "")
    assert not payload.marker.exists()


# --- image and text sizes -------------------------------------------------------------------


def png_header(path, width, height):
    """A valid 1-bit PNG claiming ``width x height``: a few bytes, no pixels allocated."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture()
def images(tmp_path):
    Image.new("RGB", (97, 131)).save(tmp_path / "ok.png")
    png_header(tmp_path / "bomb.png", 20000, 20000)  # PIL's own DecompressionBombError
    png_header(tmp_path / "big.png", 12000, 12000)  # only a PIL warning: would be decoded
    return tmp_path


@pytest.mark.parametrize("name", ["bomb.png", "big.png"])
def test_huge_images_are_data_errors_read_from_the_header(images, name):
    path = write_jsonl(images / "d.jsonl", [REC, {**REC, "image": name}])
    with pytest.raises(DataError, match=rf"d.jsonl:2: field 'image': .*{name}.*pixels"):
        list(read_samples(str(path)))
    reader = read_samples(str(path), on_error="skip")
    assert len(list(reader)) == 1 and reader.stats.skipped == {"image_too_large": 1}
    with pytest.raises(ImageError, match="pixels") as err:
        image_size(images / name)
    assert err.value.reason == "image_too_large"


def test_the_pixel_limit_is_configurable(images):
    path = write_jsonl(images / "d.jsonl", [REC])
    with pytest.raises(DataError, match="image_too_large|pixels"):
        list(read_samples(str(path), max_image_pixels=97 * 131 - 1))
    assert len(list(read_samples(str(path), max_image_pixels=97 * 131))) == 1


@pytest.mark.parametrize("name", ["bomb.png", "big.png"])
def test_decoding_checks_the_header_first(images, name):
    with pytest.raises(ImageError, match="pixels") as err:
        load_image(images / name)
    assert err.value.reason == "image_too_large"
    path = write_jsonl(images / "d.jsonl", [{**REC, "image": name}])
    (sample,) = read_samples(str(path), check_images="exists")
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'image'.*pixels") as err:
        load_sample_images(sample)
    assert err.value.reason == "image_too_large"


def test_overlong_question_or_answer_is_rejected_before_tokenising(tmp_path):
    long_q = {**QA, "conversations": [{"value": "x" * 100_001}, {"value": "blue"}]}
    long_a = {**QA, "conversations": [{"value": "why?"}, {"value": "y" * 100_001}]}
    path = write_jsonl(tmp_path / "d.jsonl", [QA, long_q, long_a])
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'conversations\[0\].value'.*100001"):
        list(read_samples(str(path)))
    reader = read_samples(str(path), on_error="skip")
    assert len(list(reader)) == 1 and reader.stats.skipped == {"text_too_long": 2}
    rec = tmp_path / "rec.json"
    rec.write_text(json.dumps([{"image": "a.png", "problem": "z" * 60, "solution": [1, 2, 3, 4]}]))
    with pytest.raises(DataError, match=r"rec.json\[0\]: field 'problem'"):
        list(read_samples(str(rec), check_images="none", max_text_chars=50))


def test_limits_come_from_the_data_config(tmp_path):
    assert DataConfig().max_image_pixels == image_module.DEFAULT_MAX_IMAGE_PIXELS
    assert DataConfig().max_text_chars == jsonl.DEFAULT_MAX_TEXT_CHARS
    path = write_jsonl(tmp_path / "d.jsonl", [QA])
    with pytest.raises(DataError, match="text_too_long|characters"):
        load_training_samples(DataConfig(train=str(path), max_text_chars=10), True)
    Image.new("RGB", (97, 131)).save(tmp_path / "ok.png")
    path = write_jsonl(tmp_path / "r.jsonl", [REC])
    with pytest.raises(DataError, match="pixels"):
        load_training_samples(DataConfig(train=str(path), max_image_pixels=100), True)


# --- boxes and encodings --------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, task",
    [
        ("[50, 4, 3, 60]", "rec"),
        ("[3, 60, 50, 4]", "rec"),
        ('[{"bbox_2d": [30, 2, 1, 40], "label": "cup"}]', "ovd"),
    ],
)
def test_inverted_ground_truth_boxes_are_data_errors(images, answer, task):
    row = {**REC, "task": task, "conversations": [REC["conversations"][0], {"value": answer}]}
    path = write_jsonl(images / "d.jsonl", [REC, row])
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'conversations\[1\].value'.*inverted"):
        list(read_samples(str(path)))
    reader = read_samples(str(path), on_error="skip")
    assert len(list(reader)) == 1 and reader.stats.skipped == {"inverted_box": 1}


def test_inverted_box_in_processed_rec_json(images):
    rec = images / "rec.json"
    rec.write_text(json.dumps([{"image": "ok.png", "problem": "p", "solution": [30, 2, 1, 40]}]))
    with pytest.raises(DataError, match=r"rec.json\[0\]: field 'solution'.*inverted"):
        list(read_samples(str(rec)))


def test_utf8_bom_is_accepted(images):
    path = write_jsonl(images / "d.jsonl", [QA, QA], prefix="\ufeff")
    assert len(list(read_samples(str(path)))) == 2
    rec = images / "rec.json"
    rec.write_text(
        "\ufeff" + json.dumps([{"image": "ok.png", "problem": "p", "solution": [1, 2, 30, 40]}]),
        encoding="utf-8",
    )
    assert len(list(read_samples(str(rec)))) == 1
