import json
import pickle

import pytest

from vlm_r1.data.convert.coco import convert_coco
from vlm_r1.data.convert.refcoco import ConversionError, convert_refcoco
from vlm_r1.data.jsonl import read_samples

INSTANCES = {
    "images": [
        {"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "width": 640, "height": 480},
        {"id": 12, "file_name": "COCO_train2014_000000000012.jpg", "width": 320, "height": 240},
        {"id": 13, "file_name": "empty.jpg", "width": 10, "height": 10},
    ],
    "annotations": [
        {
            "id": 101,
            "image_id": 11,
            "category_id": 1,
            "bbox": [10.5, 20, 100, 50],
            "area": 5000,
            "iscrowd": 0,
        },
        {
            "id": 102,
            "image_id": 11,
            "category_id": 2,
            "bbox": [200, 100, 40.25, 80],
            "area": 3220,
            "iscrowd": 0,
        },
        {
            "id": 103,
            "image_id": 12,
            "category_id": 1,
            "bbox": [0, 0, 320, 240],
            "area": 76800,
            "iscrowd": 1,
        },
        {
            "id": 104,
            "image_id": 12,
            "category_id": 3,
            "bbox": [5, 6, 7, 8],
            "area": 56,
            "iscrowd": 0,
        },
    ],
    "categories": [
        {"id": 1, "name": "person"},
        {"id": 2, "name": "dog"},
        {"id": 3, "name": "cup"},
        {"id": 4, "name": "car"},
    ],
}
REFS = [
    {
        "ref_id": 0,
        "ann_id": 101,
        "image_id": 11,
        "split": "train",
        "category_id": 1,
        "sentences": [
            {"sent": "man on the left", "raw": "Man on the left"},
            {"sent": "guy in red"},
        ],
    },
    {
        "ref_id": 1,
        "ann_id": 102,
        "image_id": 11,
        "split": "val",
        "category_id": 2,
        "sentences": [{"sent": "dog"}],
    },
]


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "instances.json").write_text(json.dumps(INSTANCES))
    with open(tmp_path / "refs(unc).p", "wb") as handle:
        pickle.dump(REFS, handle)
    return tmp_path


def test_refcoco_to_jsonl(files):
    written = convert_refcoco(files / "refs(unc).p", files / "instances.json", files / "out")
    assert set(written) == {"train", "val"}
    train = [json.loads(line) for line in written["train"].read_text().splitlines()]
    assert len(train) == 2
    assert train[0]["image"] == "COCO_train2014_000000000011.jpg"
    assert train[0]["conversations"][0]["value"] == (
        "<image>Please provide the bounding box coordinate of the region this sentence describes: man on the left."
    )
    assert json.loads(train[0]["conversations"][1]["value"]) == [
        10.5,
        20.0,
        110.5,
        70.0,
    ]  # xywh -> xyxy
    val = [json.loads(line) for line in written["val"].read_text().splitlines()]
    assert json.loads(val[0]["conversations"][1]["value"]) == [200.0, 100.0, 240.25, 180.0]
    (sample, _) = list(read_samples(str(written["train"]), check_images="none"))
    assert sample.task == "rec" and sample.solution.boxes == ((10.5, 20.0, 110.5, 70.0),)


def test_coco_to_ovd_jsonl(files):
    path = convert_coco(
        files / "instances.json", files / "ovd.jsonl", negatives=1, reward_method="odLength"
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["image"] for r in rows] == [
        "COCO_train2014_000000000011.jpg",
        "COCO_train2014_000000000012.jpg",
    ]
    question = rows[0]["conversations"][0]["value"]
    listed = question.split("objects: ")[1].rstrip(".").split(", ")
    assert {"person", "dog"} <= set(listed) and len(listed) == 3  # + one absent category
    answer = json.loads(rows[0]["conversations"][1]["value"].strip("`").removeprefix("json"))
    assert answer == [
        {"bbox_2d": [10.5, 20.0, 110.5, 70.0], "label": "person"},
        {"bbox_2d": [200.0, 100.0, 240.25, 180.0], "label": "dog"},
    ]
    crowd_free = json.loads(rows[1]["conversations"][1]["value"].strip("`").removeprefix("json"))
    assert crowd_free == [{"bbox_2d": [5.0, 6.0, 12.0, 14.0], "label": "cup"}]  # crowd box skipped
    samples = list(read_samples(str(path), check_images="none"))
    assert samples[0].task == "ovd" and samples[0].reward_method == "odLength"


def test_converter_errors(files):
    with pytest.raises(ConversionError, match="refs file not found"):
        convert_refcoco(files / "nope.p", files / "instances.json", files / "o")
    (files / "bad.json").write_text("{}")
    with pytest.raises(ConversionError, match="missing 'images'"):
        convert_refcoco(files / "refs(unc).p", files / "bad.json", files / "o")


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: what a malicious refs file can do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refs_pickle_cannot_run_code(files):
    marker = files / "PWNED"
    with open(files / "evil.p", "wb") as handle:
        pickle.dump([{"ref_id": 1, "x": _Payload(marker)}], handle)
    with pytest.raises(ConversionError, match=r"evil.p.*refuses.*open"):
        convert_refcoco(files / "evil.p", files / "instances.json", files / "o")
    assert not marker.exists()
    for protocol in (0, 2):  # the released files are Python 2 pickles
        with open(files / "old.p", "wb") as handle:
            pickle.dump(REFS, handle, protocol=protocol)
        assert set(convert_refcoco(files / "old.p", files / "instances.json", files / "o")) == {
            "train",
            "val",
        }
