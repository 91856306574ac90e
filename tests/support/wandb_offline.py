"""Read what W&B stored for an offline run (``WANDB_MODE=offline``), so tests can check what a
run logged without a network or a W&B server."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path
from typing import Any


#: Environment for an offline W&B run whose every file lands under one folder.
def offline_env(folder: Path) -> dict[str, str]:
    return {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(folder),
        "WANDB_DATA_DIR": str(folder / "data"),
        "WANDB_CACHE_DIR": str(folder / "cache"),
        "WANDB_CONFIG_DIR": str(folder / "config"),
        "WANDB_SILENT": "true",
    }


def records(path: Path) -> list[Any]:
    """The records of W&B's offline transaction log (``run-<id>.wandb``): a 7-byte header, then
    32 KiB blocks of chunks (4-byte checksum, 2-byte length, 1-byte type: full, first, middle,
    last), each record a ``wandb_internal_pb2.Record``. wandb ships the format's writer (in its
    service binary) but no Python reader."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = Path(path).read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    found, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            found.append(record)
    return found


def offline_run(folder: Path) -> list[Any]:
    """The records of the one offline run under ``folder`` (its ``WANDB_DIR``)."""
    [log] = glob.glob(str(Path(folder) / "wandb" / "offline-run-*" / "run-*.wandb"))
    return records(Path(log))


def history(found: list[Any]) -> list[dict[str, Any]]:
    """One dict per logged step, nested keys joined with ``/`` (``rollouts/nrows``)."""
    return [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in found
        if r.WhichOneof("record_type") == "history"
    ]


def last_table(found: list[Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """The last logged table (W&B stores a table with media as a ``run_table`` artifact,
    staged locally until a sync) and its files by their path in the artifact."""
    artifacts = [r.artifact for r in found if r.WhichOneof("record_type") == "artifact"]
    assert artifacts and artifacts[-1].type == "run_table", [a.type for a in artifacts]
    files = {c.path: Path(c.local_path) for c in artifacts[-1].manifest.contents}
    [name] = [p for p in files if p.endswith(".table.json")]
    return json.loads(files[name].read_text()), files


def table_artifacts(found: list[Any]) -> int:
    """How many tables the run logged."""
    return sum(
        r.WhichOneof("record_type") == "artifact" and r.artifact.type == "run_table" for r in found
    )
