"""Scale-out on CPU processes over gloo: DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3 (full
fine-tuning with a training vision tower; LoRA under FSDP2 and ZeRO-3), each launched exactly
as README's "Multi-GPU" section says, with the shipped accelerate configs (CPU overrides on the
command line: 2 processes, no mixed precision, ZeRO-3 with nothing kept resident).

Per engine, one run is killed (SIGKILL) right after its step-2 checkpoint and resumed to step 4;
those two runs are checked against a one-process run of the same config (loss and grad norm of
every step, final weights), against an uninterrupted 2-process run (identical weights: exact
resume), and for the optimiser-step count, the recorded engine, different generation lengths
per process (no hang), and a ``final/`` that the Auto classes reload.

A GRPO step here: 2 prompts x G=4 per process = 8 rows in micro-batches of 2 (4 backward passes
per step), mu=2 (two optimiser steps per rollout batch), beta=0.04 (a reference model).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
SUPPORT = str(REPO / "tests" / "support")
RUN_TIMEOUT = 420  # seconds; a hang is killed and fails its test, not the whole suite


def accelerate(config: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs" / "accelerate" / config),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        *extra,
        "-m",
    ]


def zero3_cpu_config(folder: Path) -> Path:
    """The shipped ZeRO-3 JSON with nothing kept resident: a missing gather would hang."""
    config = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())
    config["zero_optimization"].update(
        stage3_param_persistence_threshold=0,
        stage3_max_reuse_distance=0,
        stage3_prefetch_bucket_size=0,
    )
    path = folder / "zero3_cpu.json"
    path.write_text(json.dumps(config))
    return path


def launcher(engine: str, folder: Path) -> list[str]:
    if engine == "ddp":
        return accelerate("ddp.yaml")
    if engine == "fsdp2":
        return accelerate("fsdp.yaml")
    if engine == "zero2":
        return accelerate("zero2.yaml")
    return accelerate("zero3.yaml", "--deepspeed_config_file", str(zero3_cpu_config(folder)))


EXPECTED_LAUNCH = {
    "ddp": {
        "engine": "replicated",
        "world_size": 2,
        "zero_stage": None,
        "fsdp_version": None,
        "mixed_precision": "no",
    },
    "fsdp2": {
        "engine": "fsdp2",
        "world_size": 2,
        "zero_stage": None,
        "fsdp_version": 2,
        "mixed_precision": "no",
    },
    "zero2": {
        "engine": "deepspeed",
        "world_size": 2,
        "zero_stage": 2,
        "fsdp_version": None,
        "mixed_precision": "no",
    },
    "zero3": {
        "engine": "deepspeed",
        "world_size": 2,
        "zero_stage": 3,
        "fsdp_version": None,
        "mixed_precision": "no",
    },
}


def run(command: list[str], timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a launch in its own process group; past ``timeout`` (a hang) the whole group is
    killed, launcher and workers alike, and the result says so (return code -9)."""
    env = {
        **os.environ,
        "PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n[test] killed after {timeout} s: the launch hung"
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def write_config(
    folder: Path, name: str, model_path: Path, data: Path, lora: bool, **sections: dict
) -> Path:
    """The matrix's GRPO config; keyword sections (``optim={...}``) update its values."""
    config = {
        "model": {
            "path": str(model_path),
            "freeze_vision": lora,
            "lora": {"enabled": lora, "r": 4, "alpha": 8, "dropout": 0.0},
        },
        "data": {"train": str(data)},
        "rewards": [
            {"name": "toy_rewards:digit_fraction", "weight": 1.0},
            {"name": "format", "weight": 0.5},
        ],
        "rollout": {"num_generations": 4, "max_completion_length": 12},
        "algo": {"beta": 0.04, "num_iterations": 2},
        "optim": {
            "prompts_per_step": 4,
            "micro_batch_size": 2,
            "learning_rate": 2e-3,
            "max_steps": 4,
        },
        "checkpoint": {
            "output_dir": str(folder / name),
            "save_steps": 2,
            "keep_last": 0,
            "resume": "auto",
        },
        "logging": {"report_to": "none", "progress": False, "rollout_log_steps": 1},
        "seed": 0,
    }
    for section, values in sections.items():
        config[section].update(values)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def metrics(out: Path) -> list[dict]:
    with open(out / "metrics.jsonl") as handle:
        return [json.loads(line) for line in handle]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def scale_out(tmp_path_factory, shapes_rec):
    """Runs each (engine, lora) case once; tests share the results."""
    from vlm_r1.models.tiny import tiny_checkpoint

    folder = tmp_path_factory.mktemp("scale_out")
    model = tiny_checkpoint("qwen2_5_vl", "test", 0)
    done: dict[tuple[str, bool], dict[str, Path]] = {}

    def get(engine: str, lora: bool) -> dict[str, Path]:
        key = (engine, lora)
        if key in done:
            return done[key]
        tag = f"{engine}{'_lora' if lora else ''}"
        runs = {}
        single = ("single", lora)
        if single not in done:
            config = write_config(
                folder, f"single{'_lora' if lora else ''}", model, shapes_rec, lora
            )
            result = run(
                [sys.executable, "-m", "instrumented_cli", "train", "--config", str(config)]
            )
            assert result.returncode == 0, result.stderr[-4000:]
            done[single] = {"out": folder / config.stem}
        runs["single"] = done[single]["out"]
        # Killed right after its step-2 checkpoint, then resumed with the same command.
        config = write_config(folder, f"{tag}_resumed", model, shapes_rec, lora)
        command = [
            *launcher(engine, folder),
            "instrumented_cli",
            "--kill-after-checkpoint",
            "2",
            "--digest-parameters",
            "train",
            "--config",
            str(config),
        ]
        killed = run(command)
        assert killed.returncode != 0, "the run was meant to be killed after checkpoint 2"
        assert (folder / config.stem / "checkpoint-000002").is_dir(), killed.stderr[-4000:]
        assert not (folder / config.stem / "checkpoint-000004").exists()
        resumed = run(command)
        assert resumed.returncode == 0, resumed.stderr[-6000:]
        assert "resumed from" in resumed.stderr and "at step 2" in resumed.stderr
        runs["resumed"] = folder / config.stem
        runs["resumed_log"] = killed.stderr + resumed.stderr
        # The same run, uninterrupted: resume must be exact.
        config = write_config(folder, f"{tag}_straight", model, shapes_rec, lora)
        straight = run(
            [
                *launcher(engine, folder),
                "instrumented_cli",
                "--digest-parameters",
                "train",
                "--config",
                str(config),
            ]
        )
        assert straight.returncode == 0, straight.stderr[-6000:]
        runs["straight"] = folder / config.stem
        done[key] = runs
        return runs

    return get


CASES = [
    ("ddp", False),
    ("fsdp2", False),
    ("zero2", False),
    ("zero3", False),
    ("fsdp2", True),
    ("zero3", True),
]


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize(
    "engine, lora", CASES, ids=[f"{e}{'-lora' if lo else ''}" for e, lo in CASES]
)
def test_two_processes_match_one(scale_out, engine, lora):
    runs = scale_out(engine, lora)
    out, single = runs["resumed"], runs["single"]

    # The engine asked for is the engine that ran, and the run says so.
    launch = json.loads((out / "config.json").read_text())["launch"]
    assert launch == EXPECTED_LAUNCH[engine]
    state = json.loads((out / "checkpoint-000004" / "trainer_state.json").read_text())
    assert state["launch"] == EXPECTED_LAUNCH[engine]
    assert "engine: " in runs["resumed_log"]
    if engine in ("fsdp2", "zero3"):  # parameters really are sharded: each holds about half
        held = re.search(r"parameters held by each process: (\d+)%", runs["resumed_log"])
        assert held and int(held.group(1)) <= 60, runs["resumed_log"][-3000:]

    two, one = metrics(out), metrics(single)
    assert [row["step"] for row in two] == [1, 2, 3, 4]
    # One GRPO step = one optimiser step, under every engine, across the resume.
    assert [row["optimizer_steps"] for row in two] == [1, 2, 3, 4]
    # Micro-batches accumulate to the one-process step: same loss and gradient norm.
    for a, b in zip(two, one, strict=True):
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-2, abs=1e-6)

    # final/ is a plain HF checkpoint (LoRA merged) close to the one-process result.
    from transformers import AutoModelForImageTextToText

    _, info = AutoModelForImageTextToText.from_pretrained(out / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    start = load_file(
        Path(json.loads((out / "config.json").read_text())["model"]["path"]) / "model.safetensors"
    )
    mine, theirs = weights(out), weights(single)
    assert mine.keys() == theirs.keys()
    moved = sum((theirs[k] - start[k]).abs().sum() for k in theirs if k in start)
    apart = sum((mine[k] - theirs[k]).abs().sum() for k in theirs)
    assert moved > 0
    assert apart < 0.05 * moved, f"2-process weights differ from 1-process: {apart} vs {moved}"

    # Kill -9 after a checkpoint + resume = the uninterrupted run, bit for bit.
    digest = sorted((runs["straight"]).glob("param_digest_rank*.txt"))
    assert digest, "no parameter digest written"
    assert (out / digest[0].name).read_text() == digest[0].read_text()
    timing = ("step_seconds", "tokens_per_second", "rollout_seconds")
    assert [{k: v for k, v in row.items() if k not in timing} for row in two] == [
        {k: v for k, v in row.items() if k not in timing} for row in metrics(runs["straight"])
    ]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp2", "zero3"])
def test_processes_generate_different_lengths_without_waiting(tmp_path, shapes_rec, engine):
    """Under parameter sharding, process 1 decodes 3 tokens per completion while process 0
    decodes 12: a generation that waits on the other process's forwards would hang here."""
    from vlm_r1.models.tiny import tiny_checkpoint

    model = tiny_checkpoint("qwen2_5_vl", "test", 0)
    config = write_config(tmp_path, engine, model, shapes_rec, lora=False, optim={"max_steps": 2})
    result = run(
        [
            *launcher(engine, tmp_path),
            "instrumented_cli",
            "--short-completions-on-rank1",
            "3",
            "train",
            "--config",
            str(config),
        ],
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lengths = []
    for rank in (0, 1):
        with open(tmp_path / engine / f"rollouts/step_000002_rank{rank}.jsonl") as handle:
            lengths.append(max(json.loads(line)["completion_tokens"] for line in handle))
    assert lengths == [12, 3]


@pytest.mark.slow
def test_sft_under_each_engine_matches_one_process(tmp_path, shapes_rec):
    """SFT goes through the same Engine: 2 steps of 4 samples in micro-batches of 1 per process
    (2 backward passes each) give the one-process loss and gradient norm, one optimiser step
    per step."""
    from vlm_r1.models.tiny import tiny_checkpoint

    model = tiny_checkpoint("qwen2_5_vl", "test", 0)

    def config(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        settings = {
            "model": {"path": str(model)},
            "data": {"train": str(shapes_rec)},
            "optim": {
                "prompts_per_step": 4,
                "micro_batch_size": 1,
                "learning_rate": 2e-3,
                "max_steps": 2,
            },
            "checkpoint": {"output_dir": str(tmp_path / name), "save_steps": 2},
            "logging": {"report_to": "none", "progress": False},
        }
        path.write_text(yaml.safe_dump(settings))
        return path

    result = run([sys.executable, "-m", "vlm_r1.cli", "sft", "--config", str(config("single"))])
    assert result.returncode == 0, result.stderr[-4000:]
    one = metrics(tmp_path / "single")
    for engine in ("ddp", "fsdp2", "zero2", "zero3"):
        command = [
            *launcher(engine, tmp_path),
            "vlm_r1.cli",
            "sft",
            "--config",
            str(config(engine)),
        ]
        result = run(command, timeout=240)
        assert result.returncode == 0, result.stderr[-4000:]
        two = metrics(tmp_path / engine)
        assert [row["optimizer_steps"] for row in two] == [1, 2], engine
        for a, b in zip(two, one, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), engine
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), engine
        launch = json.loads((tmp_path / engine / "config.json").read_text())["launch"]
        assert launch == EXPECTED_LAUNCH[engine]
        final = load_file(tmp_path / engine / "final" / "model.safetensors")
        assert final.keys() == load_file(tmp_path / "single/final/model.safetensors").keys()


@pytest.mark.slow
def test_a_non_finite_step_is_skipped_and_counted_under_every_engine(tmp_path, shapes_rec):
    """A NaN loss on one process at step 2 makes the step's gradient non-finite: the update is
    skipped on every process (no optimiser step, no scheduler step) and counted, and step 3
    goes on from the step-1 weights exactly as in one process."""
    from vlm_r1.models.tiny import tiny_checkpoint

    model = tiny_checkpoint("qwen2_5_vl", "test", 0)

    def train(engine: str) -> list[dict]:
        config = write_config(
            tmp_path,
            engine,
            model,
            shapes_rec,
            lora=False,
            algo={"num_iterations": 1},
            optim={"max_steps": 3},
        )
        prefix = [sys.executable, "-m"] if engine == "single" else launcher(engine, tmp_path)
        command = [*prefix, "instrumented_cli", "--nan-loss-at-step", "2", "train"]
        result = run([*command, "--config", str(config)], timeout=240)
        assert result.returncode == 0, result.stderr[-4000:]
        return metrics(tmp_path / engine)

    one = train("single")
    for engine in ("fsdp2", "zero2", "zero3"):
        two = train(engine)
        assert [row["optimizer_steps"] for row in two] == [1, 1, 2], engine
        assert [row["skipped_steps"] for row in two] == [0, 1, 1], engine
        assert not math.isfinite(two[1]["grad_norm"]), engine
        assert two[2]["loss"] == pytest.approx(one[2]["loss"], rel=1e-4, abs=1e-6), engine
        assert two[2]["grad_norm"] == pytest.approx(one[2]["grad_norm"], rel=1e-3), engine
    assert [row["optimizer_steps"] for row in one] == [1, 1, 2]


@pytest.mark.slow
def test_a_launch_vlm_r1_cannot_honour_stops_before_the_model_loads(tmp_path, shapes_rec):
    """Asked-for engines run or each process stops with one line naming why (exit 2)."""
    from vlm_r1.models.tiny import tiny_checkpoint

    config = write_config(
        tmp_path, "run", tiny_checkpoint("qwen2_5_vl", "test", 0), shapes_rec, False
    )
    one_process = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs/accelerate/fsdp.yaml"),
        "--num_processes",
        "1",
        "--mixed_precision",
        "no",
        "-m",
    ]
    fsdp1 = [*accelerate("fsdp.yaml")[:-1], "--fsdp_version", "1", "-m"]
    for launch, message in [(one_process, "1 process"), (fsdp1, "FSDP version 1")]:
        result = run([*launch, "vlm_r1.cli", "train", "--config", str(config)], timeout=180)
        assert result.returncode != 0
        # vlm-r1's one line (the launcher then adds its own report of the failed child).
        lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert lines and message in lines[0], result.stderr[-3000:]
        assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow
def test_bf16_reference_computes_in_the_policys_precision(tmp_path, shapes_rec):
    """With the recipes' ``model.dtype: bfloat16`` (bf16 compute, fp32 masters; the launch says
    ``--mixed_precision no``) the reference must compute as the policy does: at step 1 they
    hold the same weights, so the KL is exactly 0 (an fp32 reference next to a bf16 policy
    gave 3e-6 under ZeRO-2, 1.5e-6 under DDP's autocast). The bf16 run stays near the fp32
    one (CPU bf16), and the run records its precision."""
    from vlm_r1.models.tiny import tiny_checkpoint

    model = tiny_checkpoint("qwen2_5_vl", "test", 0)

    def train(engine: str, dtype: str) -> list[dict]:
        name = f"{engine}_{dtype}"
        config = write_config(
            tmp_path,
            name,
            model,
            shapes_rec,
            lora=False,
            model={"dtype": dtype},
            algo={"num_iterations": 1},
            optim={"max_steps": 2},
        )
        launch = launcher(engine, tmp_path)
        result = run([*launch, "vlm_r1.cli", "train", "--config", str(config)], timeout=240)
        assert result.returncode == 0, result.stderr[-4000:]
        launched = json.loads((tmp_path / name / "config.json").read_text())["launch"]
        assert launched["mixed_precision"] == ("bf16" if dtype == "bfloat16" else "no")
        return metrics(tmp_path / name)

    for engine in ("ddp", "fsdp2", "zero2", "zero3"):
        fp32, bf16 = train(engine, "float32"), train(engine, "bfloat16")
        assert fp32[0]["kl"] == 0.0 and bf16[0]["kl"] == 0.0, engine
        for a, b in zip(bf16, fp32, strict=True):
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=2e-2), engine
            assert a["kl"] == pytest.approx(b["kl"], rel=5e-2, abs=1e-6), engine
