import json
import subprocess
import sys

import pytest
from PIL import Image

from vlm_r1.data.images import ImageError, SizeBounds, image_size, load_image
from vlm_r1.data.jsonl import DataError, load_sample_images, read_samples
from vlm_r1.data.sample import BoxSolution


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for name, size in [("a.png", (97, 131)), ("b.png", (200, 64)), ("c.png", (50, 50))]:
        Image.new("RGB", size, (10, 20, 30)).save(images / name)
    (images / "broken.png").write_bytes(b"not an image at all")
    return tmp_path


VLM_R1_LINES = [
    {
        "id": 1,
        "image": "a.png",
        "conversations": [
            {
                "from": "human",
                "value": "<image>Please provide the bounding box coordinate of the region this sentence describes: the red mug.",
            },
            {"from": "gpt", "value": "[3, 4, 50, 60]"},
        ],
    },
    {
        "id": 2,
        "image": ["a.png", "b.png"],
        "accu_reward_method": "mcq",
        "conversations": [
            {"from": "human", "value": "<image><image>Which image is wider? A. first B. second"},
            {"from": "gpt", "value": "<answer>B</answer>"},
        ],
    },
    {
        "id": 3,
        "image": "c.png",
        "accu_reward_method": "odLength",
        "conversations": [
            {
                "from": "human",
                "value": '<image>Please carefully check the image and detect the following objects: ["cup"].',
            },
            {"from": "gpt", "value": '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "cup"}]\n```'},
        ],
    },
    {
        "id": 4,
        "conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": 4}],
    },
    {
        "id": 5,
        "image": "b.png",
        "conversations": [
            {"from": "human", "value": "<image>How many cups are there?"},
            {"from": "gpt", "value": "3"},
        ],
    },
]


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_vlm_r1_lines_parse(folder):
    path = write_jsonl(folder / "data.jsonl", VLM_R1_LINES)
    samples = list(read_samples(str(path), str(folder / "imgs")))
    rec, multi, ovd, text, count = samples
    assert rec.task == "rec" and rec.solution == BoxSolution(((3.0, 4.0, 50.0, 60.0),), (None,))
    assert rec.question.startswith("Please provide") and "<image>" not in rec.question
    assert multi.images == (str(folder / "imgs/a.png"), str(folder / "imgs/b.png"))
    assert multi.reward_method == "mcq" and multi.solution == "B" and multi.task == "qa"
    assert ovd.task == "ovd" and ovd.solution.labels == ("cup",) and ovd.reward_method == "odLength"
    assert text.images == () and text.solution == "4"
    assert count.task == "count"
    assert rec.source == f"{path}:1"
    assert [len(im) for im in map(load_sample_images, samples)] == [1, 2, 1, 0, 1]


def test_colon_joined_files_folders_and_methods(folder):
    a = write_jsonl(folder / "a.jsonl", VLM_R1_LINES[:1])
    b = write_jsonl(
        folder / "b.jsonl", [dict(VLM_R1_LINES[4], accu_reward_method=None) | {"id": 9}]
    )
    reader = read_samples(
        f"{a}:{b}", f"{folder / 'imgs'}:{folder / 'imgs'}", reward_methods="default:numeric"
    )
    samples = list(reader)
    # The row's own method wins; a row without one takes its file's.
    assert [s.reward_method for s in samples] == ["default", "numeric"]
    with pytest.raises(DataError, match="2 folders for 1 data files"):
        read_samples(str(a), f"{folder}:{folder}")


def test_processed_rec_json(folder):
    records = [
        {
            "id": 7,
            "image": "a.png",
            "problem": "Please provide ... the mug.",
            "solution": [1, 2, 30, 40],
            "normalized_solution": [10, 15, 309, 305],
            "height": 131,
            "width": 97,
            "dataset_name": "refcoco",
        }
    ]
    path = folder / "rec.json"
    path.write_text(json.dumps(records))
    (sample,) = read_samples(str(path), str(folder / "imgs"))
    assert (
        sample.solution.boxes == ((1.0, 2.0, 30.0, 40.0),)
        and sample.meta["dataset_name"] == "refcoco"
    )
    path.write_text(json.dumps([{**records[0], "solution": "oops"}]))
    with pytest.raises(DataError, match=r"rec.json\[0\]: field 'solution'"):
        list(read_samples(str(path), str(folder / "imgs")))


GOOD = VLM_R1_LINES[0]
BAD_ROWS = [
    (
        '{"id": 1, "image": "a.png", "conversations": [',
        r"data.jsonl:2: field '<line>': not valid JSON",
        "malformed_json",
    ),
    ({"id": 1, "image": "a.png"}, r"data.jsonl:2: field 'conversations': missing", "missing_field"),
    ({**GOOD, "image": 5}, r"data.jsonl:2: field 'image': must be a path.*value: 5", "wrong_type"),
    (
        {**GOOD, "image": "nope.png"},
        r"data.jsonl:2: field 'image': image file not found: .*nope.png",
        "missing_image",
    ),
    (
        {**GOOD, "image": "broken.png"},
        r"data.jsonl:2: field 'image': cannot decode image .*broken.png",
        "bad_image",
    ),
    (
        {**GOOD, "conversations": [{"from": "human", "value": 3}, {"value": "x"}]},
        r"field 'conversations\[0\].value': must be a string",
        "wrong_type",
    ),
    (
        {**GOOD, "accu_reward_method": "iou_magic"},
        r"field 'accu_reward_method': unknown reward 'iou_magic'",
        "bad_value",
    ),
    (
        {
            **GOOD,
            "task": "rec",
            "conversations": [GOOD["conversations"][0], {"from": "gpt", "value": "somewhere"}],
        },
        r"field 'conversations\[1\].value': a REC answer needs a box",
        "bad_value",
    ),
    (
        {**GOOD, "image": ["a.png", "b.png"]},
        r"has 1 <image> placeholders but the row has 2 images",
        "bad_value",
    ),
]


@pytest.mark.parametrize("row, message, reason", BAD_ROWS)
def test_every_error_names_file_line_field_and_value(folder, row, message, reason):
    path = write_jsonl(folder / "data.jsonl", [GOOD, row, GOOD])
    with pytest.raises(DataError, match=message):
        list(read_samples(str(path), str(folder / "imgs")))
    reader = read_samples(str(path), str(folder / "imgs"), on_error="skip")
    assert len(list(reader)) == 2
    assert reader.stats.skipped == {reason: 1}
    assert "skipped 1" in reader.stats.summary()


def test_missing_data_file_and_bad_options(folder):
    with pytest.raises(DataError, match="data file not found"):
        read_samples(str(folder / "none.jsonl"))
    with pytest.raises(DataError, match="on_error"):
        read_samples(str(write_jsonl(folder / "d.jsonl", [GOOD])), on_error="ignore")


def test_undecodable_image_at_load_time_names_sample_source(folder):
    path = write_jsonl(folder / "data.jsonl", [{**GOOD, "image": "broken.png"}])
    (sample,) = read_samples(str(path), str(folder / "imgs"), check_images="exists")
    with pytest.raises(DataError, match=r"data.jsonl:1: field 'image': cannot decode"):
        load_sample_images(sample)


def test_exif_orientation_rgb_and_bounds(tmp_path):
    image = Image.new("L", (40, 20), 128)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.save(tmp_path / "rot.jpg", exif=exif)
    loaded = load_image(tmp_path / "rot.jpg")
    assert loaded.mode == "RGB" and loaded.size == (20, 40)
    assert image_size(tmp_path / "rot.jpg") == (20, 40)
    with pytest.raises(ImageError, match=r"rot.jpg is 20x40: a side exceeds the maximum 30"):
        load_image(tmp_path / "rot.jpg", SizeBounds(max_side=30))
    with pytest.raises(ImageError, match="image not found"):
        load_image(tmp_path / "missing.png")


RSS_SCRIPT = r"""
import json, resource, sys
from vlm_r1.data.jsonl import read_samples
path = sys.argv[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = sum(1 for _ in read_samples(path, check_images="none"))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "growth_mb": (after - before) / 1024}))
"""


@pytest.mark.slow
def test_reading_100k_lines_keeps_memory_flat(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as handle:
        for i in range(100_000):
            row = {**GOOD, "id": i, "image": f"img_{i}.png", "padding": "x" * 200}
            handle.write(json.dumps(row) + "\n")
    assert path.stat().st_size > 40e6
    # Warm the imports first so their memory is not counted as growth.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import vlm_r1.data.jsonl, vlm_r1.rewards.registry;"
            "vlm_r1.rewards.registry.reward_names();" + RSS_SCRIPT,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == 100_000
    assert report["growth_mb"] < 40, report  # the file is > 40 MB; streaming holds ~one line
