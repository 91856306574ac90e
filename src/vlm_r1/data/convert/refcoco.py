"""RefCOCO / RefCOCO+ / RefCOCOg -> REC JSONL, one file per split.

Inputs are the original files: ``refs(unc).p`` or ``refs(umd).p`` (a pickled list of refs with
``ref_id``, ``ann_id``, ``image_id``, ``split``, ``sentences``) and COCO ``instances.json``
(boxes as ``[x, y, w, h]``). Each referring sentence becomes one row whose answer is the box as
``[x1, y1, x2, y2]`` in original pixels (continuous coordinates: x2 = x + w).

Pickle can run code, so the refs file is read only from the path the user passed (never found
by searching a folder) and with an unpickler that refuses every class and function: the
released files hold only lists, dicts, strings and numbers, so they load; a pickle that names a
callable (how a malicious pickle runs code) is an error before anything runs.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any

from vlm_r1.data.sample import REC_QUESTION
from vlm_r1.errors import UserFacingError


class ConversionError(UserFacingError, ValueError):
    """An input annotation file is missing or not in the expected format."""


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only built-in containers and scalars: any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refuses to load {module}.{name}: a RefCOCO refs file holds only lists, dicts, "
            "strings and numbers, and a pickle that names a callable can run code"
        )


def _load_refs(path: Path) -> list[dict[str, Any]]:
    """Unpickle a RefCOCO refs file.

    WARNING: pickle is a code format. Call this only with the exact path the user gave
    (``--refs``); never with a file discovered by listing or globbing a folder. The
    restricted unpickler blocks classes and functions, but treat refs files like code anyway:
    use the official RefCOCO release.
    """
    if not path.is_file():
        raise ConversionError(f"refs file not found: {path}")
    try:
        with open(path, "rb") as handle:
            refs = _PlainDataUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ConversionError(f"{path} is not a RefCOCO refs pickle: {err}") from err
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ConversionError(f"{path}: expected a list of ref dicts")
    return refs


def load_instances(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"instances file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ConversionError(f"{path}: missing '{key}' (expected COCO instances format)")
    return data


def xywh_to_xyxy(box: list[float]) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)]


def convert_refcoco(
    refs_path: str | Path, instances_path: str | Path, out_dir: str | Path, dataset: str = "refcoco"
) -> dict[str, Path]:
    """Write ``{dataset}_{split}.jsonl`` for every split in the refs file; return their paths.

    WARNING: ``refs_path`` is a pickle, loaded from exactly this path (nothing is searched for);
    pass only a refs file you trust (the official release). Classes and functions in it are
    refused (see ``_load_refs``), which blocks the usual pickle payloads.
    """
    refs = _load_refs(Path(refs_path))
    instances = load_instances(Path(instances_path))
    images = {img["id"]: img for img in instances["images"]}
    annotations = {ann["id"]: ann for ann in instances["annotations"]}
    by_split: dict[str, list[str]] = defaultdict(list)
    for ref in refs:
        ann = annotations.get(ref.get("ann_id"))
        image = images.get(ref.get("image_id"))
        if ann is None or image is None:
            raise ConversionError(
                f"ref {ref.get('ref_id')}: ann_id {ref.get('ann_id')} or image_id "
                f"{ref.get('image_id')} is not in {instances_path}"
            )
        box = xywh_to_xyxy(ann["bbox"])
        for k, sentence in enumerate(ref.get("sentences", [])):
            text = sentence.get("sent") or sentence.get("raw", "")
            row = {
                "id": f"{dataset}-{ref['ref_id']}-{k}",
                "image": image["file_name"],
                "task": "rec",
                "width": image.get("width"),
                "height": image.get("height"),
                "conversations": [
                    {"from": "human", "value": "<image>" + REC_QUESTION.format(text.strip())},
                    {"from": "gpt", "value": json.dumps(box)},
                ],
                "image_id": ref["image_id"],
                "ann_id": ref["ann_id"],
                "category_id": ann.get("category_id"),
            }
            by_split[ref.get("split", "train")].append(json.dumps(row))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, rows in sorted(by_split.items()):
        path = out / f"{dataset}_{split}.jsonl"
        path.write_text("\n".join(rows) + "\n")
        written[split] = path
    return written
