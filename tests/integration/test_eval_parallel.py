"""``vlm-r1 eval`` under ``torchrun --nproc_per_node 2`` writes exactly what one process writes.

A tiny checkpoint, 11 samples of two tasks (an odd count, and batches of 4, so one process gets
two batches, the other one, and a batch mixes tasks): the metrics JSON is identical except the
timing record, the predictions file is identical byte for byte, and only the main process
prints.
"""

import json
import os
import subprocess
import sys

import pytest

from vlm_r1.data.shapes import write_shapes


def run(command, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes share this machine's cores
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(tiny_path, tmp_path):
    paths = write_shapes(
        tmp_path / "data", n_train=0, n_eval=6, seed=4, image_size="97..160", tasks=["rec", "count"]
    )
    rows = paths["rec_eval_in"].read_text().splitlines()
    rows += paths["count_eval_in"].read_text().splitlines()[:5]
    data = tmp_path / "data" / "mixed.jsonl"
    data.write_text("".join(row + "\n" for row in rows))
    assert len(rows) == 11
    eval_args = [
        "-m",
        "vlm_r1.cli",
        "eval",
        "--model",
        str(tiny_path("qwen2_5_vl")),
        "--data",
        str(data),
        "--batch-size",
        "4",
        "--max-new-tokens",
        "12",
        "--device",
        "cpu",
    ]
    one = run([sys.executable, *eval_args, "--out", str(tmp_path / "one")], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = run(
        [*torchrun, "--nproc_per_node", "2", *eval_args, "--out", str(tmp_path / "two")], tmp_path
    )

    metrics = {}
    for name in ("one", "two"):
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    timing = {name: m["_meta"].pop("throughput") for name, m in metrics.items()}
    assert metrics["one"] == metrics["two"]
    assert metrics["one"]["rec"]["n"] == 6 and metrics["one"]["count"]["n"] == 5
    assert (timing["one"]["processes"], timing["two"]["processes"]) == (1, 2)
    assert timing["one"]["generated_tokens"] == timing["two"]["generated_tokens"] > 0
    predictions = (tmp_path / "one" / "predictions.jsonl").read_bytes()
    assert predictions == (tmp_path / "two" / "predictions.jsonl").read_bytes()
    completions = [json.loads(line)["completion"] for line in predictions.splitlines()]
    assert len(set(completions)) > 1, "a degenerate model would make the comparison vacuous"
    # Only the main process prints the table and the throughput line.
    for stdout, processes in ((one, "1 process,"), (two, "2 processes,")):
        assert stdout.count("evaluation") == 1 and stdout.count("throughput:") == 1
        assert processes in stdout.replace("\n", " ")
