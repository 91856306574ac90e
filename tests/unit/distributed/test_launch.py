"""Which engine a launch asks for, read from accelerate's environment, and the DeepSpeed fields
vlm-r1 owns. Everything here runs before any model or process group exists."""

import json
from pathlib import Path

import pytest

from vlm_r1.config import ConfigError
from vlm_r1.distributed.launch import (
    EngineRecord,
    EngineRequest,
    compute_precision,
    deepspeed_config,
    fill_auto_buckets,
    requested_engine,
)

REPO = Path(__file__).resolve().parents[3]


def test_no_launch_variables_ask_for_plain_data_parallel():
    assert requested_engine({}).engine == "replicated"
    assert requested_engine({"ACCELERATE_USE_DEEPSPEED": "false"}).engine == "replicated"


def test_shipped_zero3_config_is_read_with_its_stage(tmp_path):
    request = requested_engine(
        {
            "ACCELERATE_USE_DEEPSPEED": "true",
            "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO / "configs/deepspeed/zero3.json"),
            "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
        }
    )
    assert (request.engine, request.zero_stage, request.zero3_init) == ("deepspeed", 3, True)


def test_zero_stage_flag_without_a_file():
    env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}
    request = requested_engine(env)
    assert request.zero_stage == 2
    assert request.deepspeed_config == {"zero_optimization": {"stage": 2}}


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP version 1"),
        ({"ACCELERATE_USE_FSDP": "true"}, "FSDP version 1"),  # accelerate's default
        (
            {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"},
            "offload",
        ),
        ({"ACCELERATE_USE_FSDP": "true", "ACCELERATE_USE_DEEPSPEED": "true"}, "both"),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"},
            "stage 1",
        ),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": "nope.json"},
            "nope.json",
        ),
    ],
)
def test_requests_vlm_r1_cannot_honour_are_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        requested_engine(env)


def test_fsdp2_request_reads_reshard_after_forward():
    env = {
        "ACCELERATE_USE_FSDP": "true",
        "FSDP_VERSION": "2",
        "FSDP_RESHARD_AFTER_FORWARD": "false",
    }
    request = requested_engine(env)
    assert (request.engine, request.reshard_after_forward) == ("fsdp2", False)


def test_deepspeed_fields_vlm_r1_owns_override_the_users():
    shipped = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())
    shipped.update(gradient_accumulation_steps=8, train_batch_size=64, gradient_clipping=5.0)
    request = EngineRequest("deepspeed", zero_stage=3, deepspeed_config=shipped)
    config = deepspeed_config(request, max_grad_norm=1.0)
    assert config["gradient_accumulation_steps"] == 1  # vlm-r1 marks boundaries itself
    assert config["train_micro_batch_size_per_gpu"] == 1
    assert "train_batch_size" not in config
    assert config["gradient_clipping"] == 1.0  # optim.max_grad_norm
    assert config["bf16"]["check_grad_overflow"] is True  # non-finite steps are skipped
    assert config["zero_optimization"]["compute_grad_norm"] is True
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert shipped["gradient_accumulation_steps"] == 8, "the user's dict is not modified"
    assert deepspeed_config(request, max_grad_norm=None)["gradient_clipping"] == 0.0


def test_auto_buckets_follow_the_text_hidden_size():
    config = {"zero_optimization": {"reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": 7}}
    fill_auto_buckets(config, hidden_size=64)
    assert config["zero_optimization"] == {
        "reduce_bucket_size": 64 * 64,
        "stage3_prefetch_bucket_size": 7,
    }
    with pytest.raises(ConfigError, match="reduce_bucket_size"):
        fill_auto_buckets({"zero_optimization": {"reduce_bucket_size": "auto"}}, None)


def test_record_describes_the_engine():
    assert (
        EngineRecord("deepspeed", 8, zero_stage=3).describe() == "DeepSpeed ZeRO-3 on 8 processes"
    )
    assert EngineRecord("replicated", 1).describe() == "one process"
    assert (
        EngineRecord("fsdp2", 2, fsdp_version=2).describe() == "FSDP2 (fully_shard) on 2 processes"
    )


@pytest.mark.parametrize(
    "model_dtype, launch, expected",
    [
        ("bfloat16", None, "bf16"),  # the recipes: model.dtype names the compute dtype
        ("bfloat16", "no", "bf16"),  # the CPU test launches say --mixed_precision no
        ("bfloat16", "bf16", "bf16"),
        ("float32", None, "no"),
        ("float32", "no", "no"),
        ("float32", "BF16", "bf16"),  # accelerate launch --mixed_precision bf16 alone
    ],
)
def test_compute_precision_from_model_dtype_and_launch(model_dtype, launch, expected):
    assert compute_precision(model_dtype, launch) == expected


@pytest.mark.parametrize(
    "model_dtype, launch, message",
    [
        ("float16", None, "model.dtype=float16: fp16 training needs loss scaling"),
        ("bfloat16", "fp16", "mixed_precision=fp16: fp16 training needs loss scaling"),
        ("float32", "fp8", "mixed_precision='fp8'"),
    ],
)
def test_precisions_vlm_r1_cannot_train_in_are_refused(model_dtype, launch, message):
    with pytest.raises(ConfigError, match=message):
        compute_precision(model_dtype, launch)


def test_the_record_names_the_precision():
    record = EngineRecord("replicated", 1, mixed_precision="bf16")
    assert record.as_dict()["mixed_precision"] == "bf16"
    assert record.describe_precision() == "bf16 compute, fp32 master weights and optimizer state"
    assert EngineRecord("replicated", 1).describe_precision() == "fp32"
