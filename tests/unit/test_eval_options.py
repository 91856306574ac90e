"""`vlm-r1 eval` refuses impossible options and empty data by name, before loading a model;
device, dtype and backend resolution; the data-parallel sharding and gather (property-tested);
the throughput record; and the vLLM backend around a faked engine (vLLM needs a CUDA GPU)."""

import json
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vlm_r1.config import ConfigError
from vlm_r1.data.jsonl import DataError
from vlm_r1.data.shapes import write_shapes
from vlm_r1.eval.options import default_dtype, resolve_device
from vlm_r1.eval.parallel import Processes, launched_processes, merge_shards, shard_batches
from vlm_r1.eval.report_table import throughput_line
from vlm_r1.eval.runner import (
    completion_lengths,
    evaluate_checkpoint,
    evaluate_samples,
    load_eval_samples,
    throughput,
)
from vlm_r1.eval.vllm_backend import engine_kwargs, repetition_penalty
from vlm_r1.models import detect_adapter
from vlm_r1.models.boxes import to_model
from vlm_r1.rewards.common import gt_boxes
from vlm_r1.rl.vllm_rollout import VLLMUnavailable


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


# ----------------------------------------------------------------- device, dtype, backend
@pytest.mark.parametrize(
    "options, message",
    [
        ({"device": "gpu"}, "--device='gpu' is not allowed; choose one of auto|cpu|cuda|cuda:N"),
        ({"device": "cuda:"}, "--device='cuda:' is not allowed"),
        ({"device": "cuda:x"}, "--device='cuda:x' is not allowed"),
        ({"device": "CPU"}, "--device='CPU' is not allowed"),
        ({"dtype": "fp8"}, "--dtype='fp8' is not allowed; choose one of ('float32', 'bfloat16'"),
        ({"dtype": "bf16"}, "--dtype='bf16' is not allowed"),
        ({"backend": "tgi"}, "--backend='tgi' is not allowed; choose one of ('hf', 'vllm')"),
        ({"backend": "vllm", "batch_size": 0}, "--batch-size=0 must be >= 1"),
    ],
)
def test_bad_device_dtype_backend_fail_by_flag_name(monkeypatch, tmp_path, options, message):
    monkeypatch.setattr("vlm_r1.models.load_model", not_a_model)
    monkeypatch.setitem(sys.modules, "vllm", None)  # the flag check comes before the import
    with pytest.raises(ConfigError) as info:
        evaluate_checkpoint("any", str(tmp_path / "x.jsonl"), **options)
    assert message in str(info.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "auto"])
def test_cuda_without_a_gpu_is_a_clear_error_before_loading(monkeypatch, tmp_path, device):
    monkeypatch.setattr("vlm_r1.models.load_model", not_a_model)
    monkeypatch.setattr("vlm_r1.eval.runner.cuda_device_count", lambda: 0)
    if device == "auto":  # auto falls back to the CPU, so it gets as far as the (missing) data
        with pytest.raises(DataError):
            evaluate_checkpoint("any", str(tmp_path / "x.jsonl"), device=device)
        return
    with pytest.raises(ConfigError, match=f"--device={device} but no CUDA device is visible"):
        evaluate_checkpoint("any", str(tmp_path / "x.jsonl"), device=device)


@pytest.mark.parametrize(
    "device, local_rank, world, gpus, expected",
    [
        ("auto", 0, 1, 0, "cpu"),
        ("auto", 0, 1, 2, "cuda:0"),
        ("auto", 1, 2, 2, "cuda:1"),
        ("cpu", 1, 2, 2, "cpu"),
        ("cuda", 0, 1, 1, "cuda:0"),
        ("cuda", 3, 4, 4, "cuda:3"),
        ("cuda:1", 0, 1, 2, "cuda:1"),
    ],
)
def test_each_process_resolves_its_own_device(device, local_rank, world, gpus, expected):
    assert resolve_device(device, local_rank, world, gpus) == expected


@pytest.mark.parametrize(
    "device, local_rank, world, gpus, message",
    [
        ("cuda", 2, 4, 2, "process 2 of this node needs GPU 2, but only 2 are visible"),
        ("cuda:1", 0, 2, 2, "names one GPU, but 2 processes were launched; use --device cuda"),
        ("cuda:2", 0, 1, 2, "only 2 CUDA device(s) are visible (cuda:0..cuda:1)"),
        ("cuda:0", 0, 1, 0, "no CUDA device is visible"),
    ],
)
def test_impossible_devices_are_refused(device, local_rank, world, gpus, message):
    with pytest.raises(ConfigError) as info:
        resolve_device(device, local_rank, world, gpus)
    assert message in str(info.value)


def test_default_dtype_is_float32_on_cpu_and_bfloat16_on_cuda():
    assert default_dtype("cpu") == "float32"
    assert default_dtype("cuda:1") == "bfloat16"


def test_the_launch_is_read_from_the_environment():
    assert launched_processes({}) == Processes(0, 1, 0)
    assert launched_processes({"WORLD_SIZE": "1", "RANK": "0"}) == Processes(0, 1, 0)
    launched = launched_processes({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert launched == Processes(3, 4, 1) and not launched.is_main


# ----------------------------------------------------------------------- sharding, gather
@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 120),
    batch_size=st.integers(1, 9),
    world=st.integers(1, 5),
)
def test_shards_gather_back_into_the_original_order(n, batch_size, world):
    one_process = shard_batches(n, batch_size, 0, 1)
    shards = [shard_batches(n, batch_size, rank, world) for rank in range(world)]
    # Every batch is one a single process runs (same members, so the same padding) ...
    assert sorted(b for shard in shards for b in shard) == one_process
    # ... and the processes' loads differ by at most one batch.
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    parts = [[(i, f"text {i}") for batch in shard for i in batch] for shard in shards]
    assert merge_shards(parts, n) == [f"text {i}" for i in range(n)]
    assert merge_shards(list(reversed(parts)), n) == [f"text {i}" for i in range(n)]


def test_a_missing_or_repeated_sample_is_never_scored_around():
    with pytest.raises(ValueError, match=r"no completion came back for samples \[2\]"):
        merge_shards([[(0, "a"), (1, "b")], [(3, "d")]], 4)
    with pytest.raises(ValueError, match="sample 1 was generated twice"):
        merge_shards([[(0, "a"), (1, "b")], [(1, "b")]], 2)
    with pytest.raises(ValueError, match="bad shard request"):
        shard_batches(5, 2, 2, 2)


def test_generated_tokens_stop_at_the_first_stop_token():
    pad, eos = 0, 2
    new = torch.tensor([[5, 6, eos, pad, pad], [7, eos, pad, pad, pad], [5, 5, 5, 5, 5]])
    assert completion_lengths(new, [eos]) == 3 + 2 + 5
    assert completion_lengths(torch.zeros(2, 0, dtype=torch.long), [eos]) == 0


def test_throughput_is_in_the_json_but_not_in_the_report_table():
    from vlm_r1.report.html import _eval_table

    meta = {
        "backend": "hf",
        "device": "cpu",
        "dtype": "float32",
        "throughput": throughput(2000, 50_000, 400.0, 2),
    }
    assert meta["throughput"] == {
        "seconds": 400.0,
        "processes": 2,
        "samples_per_s": 5.0,
        "generated_tokens": 50_000,
        "generated_tokens_per_s": 125.0,
    }
    metrics = {"rec": {"acc@0.5": 0.5, "miou": 0.4, "n": 2000}, "_meta": meta}
    assert throughput_line(metrics) == (
        "throughput: 5.00 samples/s, 125.0 generated tokens/s over 400.0 s of generation "
        "(2 processes, hf, cpu, float32)"
    )
    table = _eval_table({"start": {"eval_in": metrics}})
    assert "acc@0.5 0.500" in table and "throughput" not in table


# ------------------------------------------------------------------------------- vLLM
@dataclass
class FakeSamplingParams:
    """vLLM's ``SamplingParams`` keywords this backend uses (an unknown keyword fails)."""

    n: int
    temperature: float
    max_tokens: int
    stop_token_ids: list
    logit_bias: dict | None
    repetition_penalty: float
    skip_special_tokens: bool


class FakeLLM:
    """Records the engine arguments and every generate call; answers each request with the
    next scripted token ids, shaped like vLLM's ``RequestOutput``."""

    instances: list = []
    script: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        FakeLLM.instances.append(self)

    def generate(self, requests, sampling_params, use_tqdm):
        self.calls.append((requests, sampling_params, use_tqdm))
        return [
            SimpleNamespace(
                prompt=request["prompt"],
                outputs=[
                    SimpleNamespace(
                        index=0, token_ids=tuple(FakeLLM.script.pop(0)), finish_reason="stop"
                    )
                ],
            )
            for request in requests
        ]


@pytest.fixture()
def fake_vllm(monkeypatch):
    FakeLLM.instances, FakeLLM.script = [], []
    module = SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr("vlm_r1.eval.runner.cuda_device_count", lambda: 1)
    monkeypatch.setattr("vlm_r1.models.load_model", not_a_model)  # vLLM loads the model
    return module


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_vllm")
    paths = write_shapes(
        out, n_train=0, n_eval=3, seed=5, image_size="97..211", tasks=["rec", "count"]
    )
    data = out / "mixed.jsonl"
    rows = paths["rec_eval_in"].read_text().splitlines()
    rows += paths["count_eval_in"].read_text().splitlines()
    data.write_text("".join(row + "\n" for row in rows))
    return data


def oracle(adapter, processor, written):
    """The ground truth in the family's own coordinates (as a perfect model writes it)."""

    def generate(prompts):
        texts = []
        for p in prompts:
            if p.sample.task == "rec":
                boxes, _ = gt_boxes(p.sample.solution)
                box = to_model(boxes, adapter.box_space(processor, p.image_size))[0]
                answer = json.dumps([int(round(v)) for v in box])
            else:
                answer = str(p.sample.solution)
            texts.append(f"<think>I checked.</think><answer>{answer}</answer>")
        written.extend(texts)
        return texts

    return generate


def test_missing_vllm_is_one_clear_error_before_loading(monkeypatch, tmp_path):
    monkeypatch.setattr("vlm_r1.models.load_model", not_a_model)
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(VLLMUnavailable) as info:
        evaluate_checkpoint("any", str(tmp_path / "x.jsonl"), backend="vllm", device="auto")
    assert isinstance(info.value, ConfigError)
    assert "pip install 'vlm-r1[vllm]'" in str(info.value)
    assert "use --backend hf (the default)" in str(info.value)


def test_vllm_refuses_the_cpu_and_a_fixed_gpu(fake_vllm, monkeypatch, tmp_path):
    monkeypatch.setattr("vlm_r1.eval.runner.cuda_device_count", lambda: 2)
    with pytest.raises(VLLMUnavailable, match="needs vLLM and a CUDA GPU.*resolved to cpu"):
        evaluate_checkpoint("any", str(tmp_path / "x.jsonl"), backend="vllm", device="cpu")
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=1"):
        evaluate_checkpoint("any", str(tmp_path / "x.jsonl"), backend="vllm", device="cuda:1")
    assert not FakeLLM.instances


def test_vllm_refuses_a_lora_adapter_folder(fake_vllm, tmp_path, shapes):
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x/y"}))
    with pytest.raises(ConfigError, match="LoRA adapter folder; evaluate it with --backend hf"):
        evaluate_checkpoint(str(lora), str(shapes), backend="vllm", device="cuda")
    assert not FakeLLM.instances


@pytest.mark.parametrize("batch_size", [None, 4])
def test_vllm_backend_scores_exactly_as_the_hf_path(
    fake_vllm, tiny_path, tmp_path, shapes, batch_size
):
    """The same completions through the vLLM backend (faked engine) and through
    ``evaluate_samples`` (the HF path's scoring) give the same metrics and predictions."""
    checkpoint = tiny_path("qwen2_5_vl")
    adapter = detect_adapter(checkpoint)
    processor = adapter.load_processor(checkpoint)
    samples = load_eval_samples(str(shapes))
    written: list[str] = []
    expected, expected_rows = evaluate_samples(
        samples, adapter, processor, oracle(adapter, processor, written)
    )
    assert expected["rec"]["acc@0.5"] == 1.0 and expected["count"]["accuracy"] == 1.0
    tokenizer = processor.tokenizer
    eos = adapter.stop_token_ids(tokenizer)[0]
    script = [tokenizer.encode(t, add_special_tokens=False) + [eos] for t in written]
    FakeLLM.script = list(script)

    metrics = evaluate_checkpoint(
        str(checkpoint), str(shapes), tmp_path / "out", backend="vllm", batch_size=batch_size
    )

    meta = metrics.pop("_meta")
    assert metrics == expected
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").open()]
    assert rows == json.loads(json.dumps(expected_rows))
    assert meta["backend"] == "vllm" and meta["device"] == "cuda" and meta["dtype"] == "bfloat16"
    assert meta["throughput"]["generated_tokens"] == sum(len(ids) for ids in script)
    # What the engine was given.
    (llm,) = FakeLLM.instances
    assert llm.kwargs == {
        "model": str(checkpoint),
        "dtype": "bfloat16",
        "seed": 0,
        "limit_mm_per_prompt": {"image": 1},
    }
    sizes = [len(requests) for requests, _, _ in llm.calls]
    assert sizes == ([6] if batch_size is None else [4, 2])
    requests = [r for call in llm.calls for r in call[0]]
    for request, sample in zip(requests, samples, strict=True):
        # The training rollout's chat prompt (build_requests is shared), with the sample's image.
        question = adapter.prompt(sample.task, sample.question)
        assert request["prompt"] == adapter.prompt_texts(processor, [1], [question])[0]
        (image,) = request["multi_modal_data"]["image"]
        assert image.size == Image.open(sample.images[0]).size
    params = llm.calls[0][1]
    assert params == FakeSamplingParams(
        n=1,
        temperature=0.0,
        max_tokens=256,
        stop_token_ids=adapter.stop_token_ids(tokenizer),
        logit_bias={t: -100.0 for t in adapter.forbidden_token_ids(tokenizer)},
        repetition_penalty=1.0,
        skip_special_tokens=True,
    )
    assert all(use_tqdm is False for _, _, use_tqdm in llm.calls)


def test_vllm_engine_per_process_under_a_launch():
    single = engine_kwargs("/m", "float16", 1, 0)
    assert single == {
        "model": "/m",
        "dtype": "float16",
        "seed": 0,
        "limit_mm_per_prompt": {"image": 1},
    }
    assert engine_kwargs("/m", "bfloat16", 4, 3) == {
        "model": "/m",
        "dtype": "bfloat16",
        "seed": 0,
        "limit_mm_per_prompt": {"image": 3},
        "distributed_executor_backend": "external_launcher",
    }


def test_vllm_repeats_the_checkpoints_repetition_penalty(tmp_path, tiny_path):
    """HF ``generate`` applies ``generation_config.json``'s repetition_penalty to greedy
    decoding too (Qwen2.5-VL instruct ships 1.05), so the vLLM backend must pass it on."""
    (tmp_path / "generation_config.json").write_text(json.dumps({"repetition_penalty": 1.05}))
    assert repetition_penalty(str(tmp_path)) == 1.05
    assert repetition_penalty(str(tiny_path("qwen2_5_vl"))) == 1.0
    assert repetition_penalty(str(tmp_path / "nothing-here")) == 1.0


def test_hf_backend_on_a_tiny_checkpoint_reports_throughput(tiny_path, tmp_path, shapes):
    metrics = evaluate_checkpoint(
        str(tiny_path("qwen2_5_vl")), str(shapes), max_new_tokens=4, batch_size=2, progress=False
    )
    meta = metrics["_meta"]
    assert (meta["backend"], meta["device"], meta["dtype"], meta["batch_size"]) == (
        "hf",
        "cpu",
        "float32",
        2,
    )
    rate = meta["throughput"]
    assert rate["processes"] == 1 and 6 <= rate["generated_tokens"] <= 6 * 4
    assert rate["samples_per_s"] > 0 and rate["generated_tokens_per_s"] > 0
