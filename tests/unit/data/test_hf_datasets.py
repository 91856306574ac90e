"""``data.train=hf:...``: rows of a Hugging Face ``datasets`` source become the same samples as
the same rows written as VLM-R1 JSONL, pass the same checks, and fail naming row and column."""

import hashlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from vlm_r1.config import ConfigError, DataConfig, load_config  # noqa: E402
from vlm_r1.data import hf_datasets  # noqa: E402
from vlm_r1.data.hf_datasets import DatasetReader, ImageCache, image_value  # noqa: E402
from vlm_r1.data.jsonl import DataError, load_sample_images, read_samples  # noqa: E402
from vlm_r1.data.loading import load_training_samples  # noqa: E402
from vlm_r1.eval.runner import load_eval_samples  # noqa: E402


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Nothing written to the user's ``datasets`` cache; the default image cache lives here."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def png(size, colour):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = {
    "a.png": png((97, 131), (200, 10, 10)),
    "b.png": png((200, 64), (10, 200, 10)),
    "c.png": png((50, 50), (10, 10, 200)),
}
REC_Q = "Please provide the bounding box coordinate of the region this sentence describes: the mug."
#: (id, image, problem, solution, accu_reward_method, task, dataset_name): one of each task.
ROWS = [
    (1, "a.png", REC_Q, "[3, 4, 50, 60]", None, None, "refcoco"),
    (2, "b.png", "How many cups are there?", "3", None, None, "count"),
    (3, "c.png", "Which colour? A. red B. blue", "<answer>B</answer>", "mcq", None, "mcq"),
    (
        4,
        "a.png",
        'Please detect: ["cup"].',
        '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "cup"}]\n```',
        "odLength",
        None,
        "ovd",
    ),
    (5, None, "What is 2+2?", "4", None, "qa", "text"),
]


def as_table(rows, names=("id", "image", "problem", "solution", "accu_reward_method", "task")):
    """A pyarrow table in the layout ``datasets`` writes: images as ``{bytes, path}``."""
    columns = list(zip(*rows, strict=True))
    images = [None if n is None else {"bytes": IMAGES[n], "path": None} for n in columns[1]]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table(
        {
            names[0]: pa.array(columns[0], pa.int64()),
            names[1]: pa.array(images, image_type),
            names[2]: pa.array(columns[2], pa.string()),
            names[3]: pa.array(columns[3], pa.string()),
            names[4]: pa.array(columns[4], pa.string()),
            names[5]: pa.array(columns[5], pa.string()),
            "dataset_name": pa.array(columns[6], pa.string()),
        }
    )


def write_parquet(folder, rows, writer="pyarrow"):
    """With ``writer="datasets"`` the image column is a datasets ``Image`` feature (decoded
    by default when read the usual way)."""
    folder.mkdir(parents=True, exist_ok=True)
    if writer == "datasets":
        dataset = datasets.Dataset(as_table(rows)).cast_column("image", datasets.Image())
        assert isinstance(dataset.features["image"], datasets.Image)
        dataset.to_parquet(str(folder / "train.parquet"))
    else:
        pq.write_table(as_table(rows), folder / "train.parquet")
    return folder


def write_same_rows_as_jsonl(folder, rows):
    """The independent path: images as files, rows as VLM-R1 conversations."""
    images = folder / "imgs"
    images.mkdir(parents=True)
    for name, data in IMAGES.items():
        (images / name).write_bytes(data)
    lines = []
    for id_, image, problem, solution, method, task, dataset_name in rows:
        row = {
            "id": id_,
            "conversations": [
                {"from": "human", "value": ("<image>" if image else "") + problem},
                {"from": "gpt", "value": solution},
            ],
            "dataset_name": dataset_name,
        }
        row |= {"image": image} if image else {}
        row |= {"accu_reward_method": method} if method else {}
        row |= {"task": task} if task else {}
        lines.append(json.dumps(row))
    path = folder / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, images


def comparable(sample):
    """A sample with its images as content hashes and no source (the two paths differ there)."""
    digests = tuple(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in sample.images)
    return replace(sample, images=digests, source="")


def config(tmp_path, train, **fields):
    return DataConfig(train=train, cache_dir=str(tmp_path / "cache"), **fields)


@pytest.mark.parametrize("writer", ["pyarrow", "datasets"])
@pytest.mark.parametrize("streaming", [False, True])
def test_parquet_rows_are_the_samples_the_jsonl_reader_makes(tmp_path, streaming, writer):
    folder = write_parquet(tmp_path / "ds", ROWS, writer)
    jsonl, images = write_same_rows_as_jsonl(tmp_path / "jsonl", ROWS)
    expected = list(read_samples(str(jsonl), str(images)))

    data = config(tmp_path, f"hf:{folder}", streaming=streaming)
    samples = load_training_samples(data, is_main=True)

    assert [comparable(s) for s in samples] == [comparable(s) for s in expected]
    assert [s.meta for s in samples] == [s.meta for s in expected]  # other columns kept
    assert [s.task for s in samples] == ["rec", "count", "qa", "ovd", "qa"]
    assert samples[0].source == f"hf:{folder}:train[0]"
    # Images are written once, named by content, under data.cache_dir; they decode as the
    # JSONL files do.
    digest = hashlib.sha256(IMAGES["a.png"]).hexdigest()
    assert samples[0].images == (str(tmp_path / "cache/vlm_r1_images" / digest[:2] / digest),)
    assert samples[3].images == samples[0].images
    assert len(list((tmp_path / "cache/vlm_r1_images").rglob("*"))) == 3 + 3  # 3 dirs, 3 files
    for ours, theirs in zip(samples, expected, strict=True):
        assert [im.tobytes() for im in load_sample_images(ours)] == [
            im.tobytes() for im in load_sample_images(theirs)
        ]


def test_column_mapping_plain_bytes_and_other_column_names(tmp_path):
    folder = tmp_path / "mapped"
    folder.mkdir()
    table = pa.table(
        {
            "key": ["x1", "x2"],
            "question": [REC_Q, "Say hi?"],
            "answer": ["[3, 4, 50, 60]", "hello"],
            "pictures": pa.array([[IMAGES["a.png"]], None], pa.list_(pa.binary())),
            "kind": ["rec", "qa"],
        }
    )
    pq.write_table(table, folder / "data.parquet")
    columns = {"id": "key", "problem": "question", "solution": "answer", "image": "pictures"}
    data = config(tmp_path, f"hf:{folder}", columns=columns | {"task": "kind"})
    first, second = load_training_samples(data, is_main=True)
    assert first.id == "x1" and first.task == "rec" and first.boxes.boxes == ((3, 4, 50, 60),)
    assert Path(first.images[0]).read_bytes() == IMAGES["a.png"]
    assert second.id == "x2" and second.images == () and second.solution == "hello"


def test_path_strings_images_column_and_boxes_as_lists(tmp_path):
    """Relative image paths resolve under the source's folder; an ``images`` column is found
    without mapping; a box stored as a list of numbers is the answer; "<image>" placeholders
    must match the images, as in JSONL; a source without ids names rows by their place."""
    folder = tmp_path / "paths"
    (folder / "pics").mkdir(parents=True)
    (folder / "pics/b.png").write_bytes(IMAGES["b.png"])
    table = pa.table(
        {
            "problem": [REC_Q, "<image><image>Where is it?", "<image><image>Where is it?"],
            "solution": [[3.0, 4.0, 50.0, 60.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]],
            "images": [["pics/b.png"], ["pics/b.png"], ["pics/b.png", "pics/b.png"]],
        }
    )
    pq.write_table(table, folder / "data.parquet")
    with pytest.raises(DataError, match=r"paths:train\[1\]: field 'problem': has 2 <image>"):
        list(DatasetReader(f"hf:{folder}"))
    reader = DatasetReader(f"hf:{folder}", on_error="skip")
    first, third = reader
    assert reader.stats.skipped == {"bad_value": 1}
    assert first.images == (str(folder / "pics/b.png"),) and third.images == first.images * 2
    assert first.boxes.boxes == ((3.0, 4.0, 50.0, 60.0),) and third.task == "rec"
    assert (first.id, third.id) == (f"hf:{folder}:train[0]", f"hf:{folder}:train[2]")
    # data.image_folders moves where relative paths are looked for.
    other = tmp_path / "elsewhere"
    (other / "pics").mkdir(parents=True)
    (other / "pics/b.png").write_bytes(IMAGES["c.png"])
    (moved, *_) = DatasetReader(f"hf:{folder}", image_folder=str(other), on_error="skip")
    assert moved.images == (str(other / "pics/b.png"),)


def test_a_missing_or_unknown_column_is_refused_before_reading_rows(tmp_path):
    folder = write_parquet(tmp_path / "ds", ROWS)
    with pytest.raises(DataError, match=r"field 'data.columns.problem': no column 'question'"):
        DatasetReader(f"hf:{folder}", columns={"problem": "question"})
    with pytest.raises(DataError, match=r"field 'data.columns.image': no column 'pic'.*'task'"):
        DatasetReader(f"hf:{folder}", columns={"image": "pic"})
    with pytest.raises(DataError, match=r"data.columns.caption.*not a sample field"):
        DatasetReader(f"hf:{folder}", columns={"caption": "problem"})


GOOD = (1, "a.png", REC_Q, "[3, 4, 50, 60]", None, None, "ok")
BAD_ROWS = [
    # (row, column named in the error, message, reason)
    ((2, "a.png", None, "[1, 2, 3, 4]", None, None, "x"), "q", "is null", "missing_field"),
    (
        (2, "a.png", REC_Q, "somewhere", None, "rec", "x"),
        "sol",
        "a REC answer needs a box",
        "bad_value",
    ),
    ((2, "a.png", REC_Q, "[9, 9, 1, 1]", None, None, "x"), "sol", "is inverted", "inverted_box"),
    (
        (2, "a.png", "x" * 600, "[1, 2, 3, 4]", None, None, "x"),
        "q",
        "above the limit",
        "text_too_long",
    ),
    ((2, "a.png", REC_Q, "[1, 2, 3, 4]", None, "find", "x"), "kind", "must be one of", "bad_value"),
    (
        (2, "a.png", REC_Q, "[1, 2, 3, 4]", "rec_iuo", None, "x"),
        "how",
        "unknown reward",
        "bad_value",
    ),
]


def bad_table(bad_row, broken_image=False):
    table = as_table([GOOD, bad_row, GOOD], ("id", "pic", "q", "sol", "how", "kind"))
    if broken_image:
        image_type = table.schema.field("pic").type
        pics = [{"bytes": IMAGES["a.png"], "path": None}, {"bytes": b"not a png", "path": None}]
        table = table.set_column(1, "pic", pa.array(pics + pics[:1], image_type))
    return table


COLUMNS = {"image": "pic", "problem": "q", "solution": "sol", "accu_reward_method": "how"}
COLUMNS |= {"task": "kind"}


def read_bad(tmp_path, table, on_error, streaming=False):
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    pq.write_table(table, folder / "train.parquet")
    return DatasetReader(
        f"hf:{folder}",
        columns=COLUMNS,
        streaming=streaming,
        on_error=on_error,
        max_text_chars=500,
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.mark.parametrize("row, column, message, reason", BAD_ROWS)
def test_a_bad_row_names_its_index_and_column_or_is_skipped(tmp_path, row, column, message, reason):
    with pytest.raises(DataError, match=rf"bad:train\[1\]: field '{column}': .*{message}"):
        list(read_bad(tmp_path, bad_table(row), "raise"))
    reader = read_bad(tmp_path, bad_table(row), "skip")
    assert [s.id for s in reader] == ["1", "1"]
    assert reader.stats.skipped == {reason: 1}


@pytest.mark.parametrize("streaming", [False, True])
def test_undecodable_and_oversized_image_bytes_are_data_errors(tmp_path, streaming):
    table = bad_table(GOOD, broken_image=True)
    with pytest.raises(DataError, match=r"bad:train\[1\]: field 'pic': cannot decode image"):
        list(read_bad(tmp_path, table, "raise", streaming))
    reader = read_bad(tmp_path, table, "skip", streaming)
    assert len(list(reader)) == 2 and reader.stats.skipped == {"bad_image": 1}
    # The pixel limit is read from the written file's header, as for any image file.
    small = DatasetReader(
        f"hf:{tmp_path / 'bad'}", columns=COLUMNS, max_image_pixels=1000, on_error="skip"
    )
    assert list(small) == [] and small.stats.skipped == {"image_too_large": 2, "bad_image": 1}


def test_data_cannot_name_code_to_run(tmp_path):
    marker = tmp_path / "PWNED"
    script = tmp_path / "evil.py"
    script.write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef fn(*a, **k):\n    return []\n")
    row = (2, "a.png", REC_Q, "[1, 2, 3, 4]", f"{script}:fn", None, "x")
    with pytest.raises(DataError, match=r"train\[1\]: field 'how': .*not declared"):
        list(read_bad(tmp_path, bad_table(row), "raise"))
    assert not marker.exists()


def test_max_samples_reads_only_that_many_rows_of_a_stream(tmp_path, monkeypatch):
    many = [(i, None, f"What is {i}+1?", str(i + 1), None, "qa", "n") for i in range(40)]
    folder = write_parquet(tmp_path / "many", many)
    for streaming in (False, True):  # more rows than one batch: all of them, in order
        every = load_training_samples(config(tmp_path, f"hf:{folder}", streaming=streaming), True)
        assert [s.id for s in every] == [str(i) for i in range(40)]
    data = config(tmp_path, f"hf:{folder}", streaming=True, max_samples=3)
    assert [s.id for s in load_training_samples(data, is_main=True)] == ["0", "1", "2"]
    data = config(tmp_path, f"hf:{folder}", max_samples=4)
    assert len(load_training_samples(data, is_main=True)) == 4

    # A stream of 100k rows whose columns are unknown up front: rows are made as they are read.
    made = []

    def rows():
        for i in range(100_000):
            made.append(i)
            yield {"problem": f"What is {i}+1?", "solution": str(i + 1), "image": IMAGES["c.png"]}

    stream = datasets.IterableDataset.from_generator(rows)
    assert stream.column_names is None
    monkeypatch.setattr(hf_datasets, "open_dataset", lambda *a, **k: (stream, "train"))
    data = config(tmp_path, "hf:generated", streaming=True, max_samples=5)
    assert len(load_training_samples(data, is_main=True)) == 5
    assert len(made) <= 5 + hf_datasets.BATCH_ROWS


def test_a_stream_of_unknown_columns_is_checked_row_by_row(tmp_path, monkeypatch):
    def stream_of(rows):
        stream = datasets.IterableDataset.from_generator(lambda: iter(rows))
        monkeypatch.setattr(hf_datasets, "open_dataset", lambda *a, **k: (stream, "train"))

    stream_of([{"question": "What is 2+2?", "solution": "4"}] * 2)  # no problem column
    with pytest.raises(DataError, match=r"hf:gen:train\[0\]: field 'problem': is missing"):
        list(DatasetReader("hf:gen", streaming=True))
    reader = DatasetReader("hf:gen", streaming=True, on_error="skip")
    assert list(reader) == [] and reader.stats.skipped == {"missing_field": 2}
    # A source that breaks while read is not a row to skip: it names the source and the place.
    stream_of([{"problem": "1+1?", "solution": "2"}, {"question": "2+2?", "solution": "4"}])
    with pytest.raises(DataError, match=r"hf:gen:train\[0\]: field 'data.train': .*not be read"):
        list(DatasetReader("hf:gen", streaming=True, on_error="skip"))


def test_missing_package_and_unreachable_hub_fail_naming_data_train(tmp_path, monkeypatch):
    data = config(tmp_path, "hf:someorg/some-dataset")
    huggingface_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as on a machine without a hub
    monkeypatch.setattr(huggingface_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match=r"field 'data.train': cannot load .*someorg/some-dataset"):
        load_training_samples(data, is_main=True)
    missing = config(tmp_path, f"hf:{tmp_path}/not/there")
    with pytest.raises(DataError, match=r"field 'data.train': .*not an existing file or folder"):
        load_training_samples(missing, is_main=True)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    with pytest.raises(
        DataError,
        match=r"field 'data.train': .*pip install 'vlm-r1\[hf\]', or pip install datasets",
    ):
        load_training_samples(data, is_main=True)


def test_save_to_disk_folders_single_files_and_splits(tmp_path):
    folder = write_parquet(tmp_path / "ds", ROWS)
    loaded = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c"))
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": loaded.select(range(2)), "test": loaded}).save_to_disk(saved)
    for streaming in (False, True):
        test = config(tmp_path, f"hf:{saved}", split="test", streaming=streaming)
        assert len(load_training_samples(test, is_main=True)) == len(ROWS)
    with pytest.raises(DataError, match=r"field 'data.train': has no split 'dev' \(data.split\)"):
        load_training_samples(config(tmp_path, f"hf:{saved}", split="dev"), is_main=True)
    one_file = config(tmp_path, f"hf:{folder / 'train.parquet'}")
    assert len(load_training_samples(one_file, is_main=True)) == len(ROWS)

    # Evaluation reads the same sources; without a split it takes the only one there is.
    assert len(load_eval_samples(f"hf:{folder}")) == len(ROWS)
    assert len(load_eval_samples(f"hf:{saved}", split="train")) == 2
    with pytest.raises(DataError, match=r"field '--data': has splits \['train', 'test'\]"):
        load_eval_samples(f"hf:{saved}")


def test_decoded_images_and_the_cache_are_deterministic(tmp_path):
    cache = ImageCache(tmp_path / "images")
    image = Image.new("RGB", (30, 20), (1, 2, 3))
    first = image_value(image, cache)
    assert first == image_value(image.copy(), cache)  # same pixels, same file
    assert Image.open(first).tobytes() == image.tobytes()
    both = image_value([{"bytes": IMAGES["b.png"], "path": "b.png"}, "rel/x.png"], cache)
    assert both == [cache.path_of(IMAGES["b.png"]), "rel/x.png"]
    assert image_value({"bytes": None, "path": "/abs/y.png"}, cache) == "/abs/y.png"
    assert image_value(7, cache) == 7  # left for the validator to refuse by column
    assert sorted(p.name for p in (tmp_path / "images").rglob("*") if p.is_file()) == sorted(
        [
            hashlib.sha256(Path(first).read_bytes()).hexdigest(),
            hashlib.sha256(IMAGES["b.png"]).hexdigest(),
        ]
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.train='hf: '"], "data.train='hf: ' names no dataset"),
        (["data.train=hf:x", "data.columns={question: q}"], "data.columns.question is not a"),
        (["data.train=hf:x", "data.columns={problem: ''}"], "data.columns.problem='' must be"),
        (["data.train=hf:x", "data.split=''"], "data.split is empty"),
        (["data.train=hf:x", "data.streaming=maybe"], "data.streaming='maybe' must be true"),
        (["data.train=a.jsonl", "data.streaming=true"], "data.streaming applies only to a"),
        (["data.train=a.jsonl", "data.split=test"], "data.split applies only to a datasets"),
        (["data.train=a.jsonl", "data.columns={problem: q}"], "data.columns applies only"),
        (["data.train=a.jsonl", "data.cache_dir=/tmp"], "data.cache_dir applies only"),
        (["data.train=a.jsonl", "data.subset=en"], "data.subset applies only"),
    ],
)
def test_config_refuses_bad_datasets_settings_by_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_config_accepts_a_datasets_source():
    cfg = load_config(
        None,
        [
            "data.train=hf:org/name",
            "data.split=validation",
            "data.columns={problem: question, image: images}",
            "data.streaming=true",
            "data.max_samples=10",
        ],
    )
    assert cfg.data.columns == {"problem": "question", "image": "images"}
    assert cfg.data.streaming and cfg.data.split == "validation"
