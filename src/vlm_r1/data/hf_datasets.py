"""Samples from a Hugging Face ``datasets`` source (``data.train=hf:...``), checked exactly like
VLM-R1 JSONL rows.

A source is a local parquet/arrow/json/csv file or a folder of them, a folder written by
``save_to_disk``, or a hub dataset name (``hf:org/name``, where the hub can be reached). A
row's columns are mapped to the sample fields (``data.columns``; each field defaults to a
column of its own name, ``image`` also to ``images``) and the row then goes through
``jsonl.sample_from_fields``, the one validator JSONL rows pass too: types, text limits, image
checks, the reward-method allow-list (data names no code), answer parsing. An error names the
row as ``hf:<source>:<split>[<index>]`` and the field by its column.

Images: ``Sample`` holds image *paths*, opened lazily with the header checked first, and
everything downstream (prompts, rollouts, eval predictions, the report) reads paths. So rather
than widening ``Sample``, an image stored in a row (bytes) is written once to
``<cache>/vlm_r1_images/<sha[:2]>/<sha256 of the bytes>``: the name depends on the content
only, so every process, and every later run, finds the same file; writes are atomic. Rows are
taken in Arrow form, so a datasets ``Image`` column arrives undecoded as ``{bytes, path}``:
reading decodes nothing, and the pixel limit is checked from the written file's header like
any other image. A path string (or an image with only a path) is used as is, relative ones
under ``data.image_folders`` or the local source's folder; an already decoded PIL image (from a
source that yields them) is written as PNG.

With ``streaming``, rows are read as they arrive, a few at a time, so a reader stopped after
``max_samples`` has read little more than those rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlm_r1.config import DataConfig
from vlm_r1.data.images import DEFAULT_MAX_IMAGE_PIXELS
from vlm_r1.data.jsonl import (
    DEFAULT_MAX_TEXT_CHARS,
    DataError,
    FieldNames,
    ReadStats,
    RowFields,
    RowReader,
    known_method,
    sample_from_fields,
)
from vlm_r1.data.sample import Sample

PREFIX = DataConfig.DATASETS_PREFIX
COLUMN_FIELDS = DataConfig.COLUMN_FIELDS
#: Rows converted from Arrow at a time: few, so that streaming reads little past the rows
#: asked for and rows holding large images do not pile up in memory.
BATCH_ROWS = 16
IMAGE_CACHE = "vlm_r1_images"
#: ``datasets`` builders for a single local file, by suffix.
FILE_BUILDERS = {
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
}
_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")


@dataclass(frozen=True)
class SourceKeys:
    """The settings a source's errors name: the config's keys for training; a caller with
    other names (``vlm-r1 eval``'s flags) passes its own."""

    source: str = "data.train"
    split: str = "data.split"
    columns: str = "data.columns"


TRAIN_KEYS = SourceKeys()


def is_datasets_source(spec: Any) -> bool:
    """``hf:...``: one ``datasets`` source (anything else is VLM-R1 JSONL/JSON files)."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


class ImageCache:
    """Image bytes -> a file named by their SHA-256, written once and atomically (several
    processes reading the same source write the same names, and a reader never sees half a
    file)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path_of(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.folder / digest[:2] / digest
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{digest}.")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return str(path)


def image_value(value: Any, cache: ImageCache) -> Any:
    """A row's image cell (one image or a list) as path strings for the shared validator.

    Bytes (also a datasets ``{bytes, path}`` struct holding them) and decoded PIL images are
    written to ``cache``; a value of no image kind is returned unchanged, so the validator
    refuses it naming the column."""
    if isinstance(value, list):
        return [_one_image(v, cache) for v in value]
    return _one_image(value, cache)


def _one_image(value: Any, cache: ImageCache) -> Any:
    if isinstance(value, dict) and set(value) <= {"bytes", "path"}:
        if value.get("bytes") is None:
            return value.get("path")
        value = value["bytes"]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return cache.path_of(bytes(value))
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return cache.path_of(buffer.getvalue())
    return value


def _plain(value: Any) -> bool:
    """JSON-like (kept in ``Sample.meta``); image bytes and other objects are not."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _answer(value: Any) -> Any:
    """A list or mapping answer (a box ``[x1, y1, x2, y2]``, ``[{bbox_2d, label}]``) as the
    JSON text a JSONL row would hold; anything else as it is."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _import_datasets(spec: str, key: str) -> Any:
    try:
        import datasets
    except ImportError as err:
        raise DataError(
            "<config>",
            key,
            "a datasets source needs the Hugging Face `datasets` package "
            "(pip install 'vlm-r1[hf]', or pip install datasets)",
            spec,
            "missing_package",
        ) from err
    return datasets


def _saved_to_disk(folder: Path) -> bool:
    """A folder written by ``save_to_disk`` (read with ``load_from_disk``, not a builder)."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _choose_split(loaded: Any, split: str | None, spec: str, keys: SourceKeys) -> tuple[Any, str]:
    """A split of a dict of splits: the one named, or with ``split=None`` the only one."""
    if not isinstance(loaded, Mapping):
        return loaded, split or "train"
    names = list(loaded)
    if split is None and len(names) == 1:
        split = names[0]
    if split not in names:
        problem = (
            f"has splits {names}; choose one with {keys.split}"
            if split is None
            else f"has no split {split!r} ({keys.split}); its splits: {names}"
        )
        raise DataError("<config>", keys.source, problem, spec, "bad_value")
    return loaded[split], split


def open_dataset(
    spec: str,
    split: str | None = "train",
    subset: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
    keys: SourceKeys = TRAIN_KEYS,
) -> tuple[Any, str]:
    """``(dataset, split name)`` for ``hf:<source>``; any failure (no ``datasets``, no such
    path, hub unreachable, unknown split) is a ``DataError`` naming ``keys.source``."""
    datasets = _import_datasets(spec, keys.source)
    name = spec[len(PREFIX) :]
    local = Path(name).expanduser()
    kwargs: dict[str, Any] = {"split": split, "streaming": streaming, "cache_dir": cache_dir}
    try:
        if local.is_dir() and _saved_to_disk(local):
            loaded, split_name = _choose_split(
                datasets.load_from_disk(str(local)), split, spec, keys
            )
            return (loaded.to_iterable_dataset() if streaming else loaded), split_name
        if local.is_file():
            builder = FILE_BUILDERS.get(local.suffix.lower())
            if builder is None:
                raise DataError(
                    "<config>",
                    keys.source,
                    f"cannot read a {local.suffix or 'suffix-less'} file; a datasets file is "
                    f"one of {', '.join(FILE_BUILDERS)} (or name its folder)",
                    spec,
                    "bad_value",
                )
            loaded = datasets.load_dataset(builder, data_files=str(local), **kwargs)
        elif local.is_dir():
            loaded = datasets.load_dataset(str(local), subset, **kwargs)
        elif not _HUB_NAME.fullmatch(name):
            raise DataError(
                "<config>",
                keys.source,
                f"{name} is not an existing file or folder, nor a hub name (org/name)",
                spec,
                "missing_file",
            )
        else:
            loaded = datasets.load_dataset(name, subset, **kwargs)
    except DataError:
        raise
    except Exception as err:  # the hub, the builders and Arrow raise many types; name them all
        raise DataError(
            "<config>",
            keys.source,
            f"cannot load this datasets source ({type(err).__name__}: {err})",
            spec,
            "unreadable",
        ) from err
    return _choose_split(loaded, split, spec, keys)


def resolve_columns(
    columns: Mapping[str, str], available: list[str] | None, spec: str, keys: SourceKeys
) -> dict[str, str]:
    """Sample field -> column. Unknown fields are refused; when the dataset's columns are known
    (always, except for some streamed sources), a missing problem/solution column or a mapped
    column that is not there is refused too, listing the columns there are."""
    for field_name in columns:
        if field_name not in COLUMN_FIELDS:
            raise DataError(
                "<config>",
                f"{keys.columns}.{field_name}",
                f"is not a sample field; map one of {', '.join(COLUMN_FIELDS)}",
                columns[field_name],
                "bad_value",
            )
    resolved = {f: columns.get(f, f) for f in COLUMN_FIELDS}
    if available is None:
        return resolved
    needed = [f for f in COLUMN_FIELDS if f in ("problem", "solution") or f in columns]
    for field_name in needed:
        if resolved[field_name] not in available:
            raise DataError(
                "<config>",
                f"{keys.columns}.{field_name}",
                f"no column {resolved[field_name]!r} in {spec} (its columns: {available}); "
                f"map the {field_name} field to one with {keys.columns}.{field_name}",
                resolved[field_name],
                "missing_field",
            )
    return resolved


class DatasetReader(RowReader):
    """Iterate ``Sample``s from one ``datasets`` source (see the module docstring).

    Re-iterable; each pass starts again from the first row and resets ``stats``. The dataset is
    opened (and its columns checked) here, so a wrong source fails before any model loads.
    ``reward_method``: the source's method (a row's own wins), checked like a file's.
    ``split=None``: the source's only split (an error listing them when there are several).
    """

    def __init__(
        self,
        spec: str,
        split: str | None = "train",
        columns: Mapping[str, str] | None = None,
        streaming: bool = False,
        subset: str | None = None,
        cache_dir: str | None = None,
        image_folder: str | None = None,
        reward_method: str | None = None,
        on_error: str = "raise",
        check_images: str = "header",
        allowed_methods: Collection[str] = (),
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        keys: SourceKeys = TRAIN_KEYS,
    ):
        super().__init__(on_error, check_images, allowed_methods, max_image_pixels, max_text_chars)
        if not is_datasets_source(spec):
            raise DataError("<config>", keys.source, f"must start with {PREFIX}", spec)
        self.spec = spec
        self.keys = keys
        self.reward_method = reward_method or None
        known_method(self.reward_method, "<config>", self.rules.allowed_methods, "reward_methods")
        self.dataset, self.split = open_dataset(spec, split, subset, streaming, cache_dir, keys)
        self.columns = resolve_columns(columns or {}, self.dataset.column_names, spec, keys)
        self.explicit_image = "image" in (columns or {})
        local = Path(spec[len(PREFIX) :]).expanduser()
        source_folder = local if local.is_dir() else local.parent if local.is_file() else None
        self.image_folder = Path(image_folder or source_folder or "")
        datasets_cache = _import_datasets(spec, keys.source).config.HF_DATASETS_CACHE
        self.cache = ImageCache(Path(cache_dir or datasets_cache) / IMAGE_CACHE)

    def __iter__(self) -> Iterator[Sample]:
        self.stats = ReadStats()
        for index, row in enumerate(self._rows()):
            where = f"{self.spec}:{self.split}[{index}]"
            try:
                fields = self._fields(row, where)
                sample = sample_from_fields(
                    fields, where, self.image_folder, self.reward_method, self.rules
                )
            except DataError as err:
                self._handle(err)
                continue
            self.stats.read += 1
            yield sample
        self._log_skipped()

    def _rows(self) -> Iterator[dict[str, Any]]:
        """Rows as plain dicts, from Arrow: images stay undecoded bytes. A source that breaks
        while being read (a corrupt file, a dropped connection, rows whose columns disagree) is
        not one bad row that could be skipped: it is an error naming the source and the row
        reached, whatever ``on_error`` says."""
        batches = iter(self.dataset.with_format("arrow").iter(batch_size=BATCH_ROWS))
        reached = 0
        while True:
            try:
                table = next(batches)
            except StopIteration:
                return
            except Exception as err:  # Arrow, fsspec and the hub raise many types
                raise DataError(
                    f"{self.spec}:{self.split}[{reached}]",
                    self.keys.source,
                    f"the source could not be read on from here ({type(err).__name__}: {err})",
                    self.spec,
                    "unreadable",
                ) from err
            rows = table.to_pylist()
            reached += len(rows)
            yield from rows

    def _fields(self, row: dict[str, Any], where: str) -> RowFields:
        """The row's values by field (images written to the cache), named by their columns."""
        columns = dict(self.columns)
        if not self.explicit_image and columns["image"] not in row and "images" in row:
            columns["image"] = "images"
        for field_name in ("problem", "solution"):
            if row.get(columns[field_name]) is None:
                state = "is null" if columns[field_name] in row else "is missing"
                problem = f"{state} (the {field_name} column)"
                raise DataError(where, columns[field_name], problem, None, "missing_field")
        names = FieldNames(
            question=columns["problem"],
            answer=columns["solution"],
            image=columns["image"],
            method=columns["accu_reward_method"],
            task=columns["task"],
            id=columns["id"],
        )
        identifier = row.get(columns["id"])
        used = set(columns.values())
        return RowFields(
            question=row[columns["problem"]],
            answer=_answer(row[columns["solution"]]),
            id=where if identifier is None else identifier,
            images=image_value(row.get(columns["image"]), self.cache),
            method=row.get(columns["accu_reward_method"]),
            task=row.get(columns["task"]),
            meta={k: v for k, v in row.items() if k not in used and _plain(v)},
            names=names,
        )
