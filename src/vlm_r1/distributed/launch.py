"""Which engine the user asked for, read from what ``accelerate launch`` puts in the
environment (``--config_file configs/accelerate/zero3.yaml`` or ``--use_deepspeed
--zero_stage 3`` or ``--use_fsdp``), and the record of the engine that runs.

The point is that the asked-for engine is the engine that runs, or a clear error: accelerate
alone silently drops a DeepSpeed or FSDP request on a machine without CUDA (it runs plain data
parallel instead). ``torchrun`` without those variables asks for plain data parallel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from vlm_r1.config import ConfigError

EngineName = Literal["replicated", "fsdp2", "deepspeed"]


def _true(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class EngineRequest:
    engine: EngineName
    zero_stage: int | None = None  # deepspeed only
    deepspeed_config: dict[str, Any] | None = None  # the user's JSON, "auto" values unresolved
    zero3_init: bool = False
    reshard_after_forward: bool = True  # fsdp2 only


@dataclass(frozen=True)
class EngineRecord:
    """What ran; written to the log, ``config.json`` (key ``launch``) and every checkpoint."""

    engine: EngineName
    world_size: int
    zero_stage: int | None = None
    fsdp_version: int | None = None
    mixed_precision: str = "no"  # accelerate's name: "no" (fp32) or "bf16" compute

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.world_size == 1 and self.engine == "replicated":
            return "one process"
        detail = {
            "replicated": "data parallel (DDP)",
            "fsdp2": "FSDP2 (fully_shard)",
            "deepspeed": f"DeepSpeed ZeRO-{self.zero_stage}",
        }[self.engine]
        return f"{detail} on {self.world_size} processes"

    def describe_precision(self) -> str:
        if self.mixed_precision == "bf16":
            return "bf16 compute, fp32 master weights and optimizer state"
        return "fp32"


#: ``model.dtype`` -> accelerate's ``mixed_precision`` name for that compute dtype.
_COMPUTE = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def compute_precision(model_dtype: str, launch_precision: str | None) -> str:
    """The mixed precision a training run computes in (accelerate's name: ``"no"`` or ``"bf16"``).

    Training always keeps float32 master weights and optimizer state: bf16 weights stepped by
    AdamW at a learning rate of 1e-6 lose most updates to rounding (an update smaller than half
    a bf16 ulp of the weight, ~0.4% of it, vanishes). ``model.dtype`` therefore names the
    compute dtype: ``bfloat16`` runs the forwards and backwards in bf16 (autocast for one
    process / DDP, FSDP2's ``MixedPrecisionPolicy``, DeepSpeed's ``bf16`` section). With
    ``model.dtype: float32`` the launch decides (``accelerate launch --mixed_precision bf16``).
    fp16 is refused: it needs loss scaling, which vlm-r1 does not do.
    """
    launch = (launch_precision or "no").strip().lower()
    asked = _COMPUTE.get(model_dtype, model_dtype)
    if "fp16" in (asked, launch):
        source = "model.dtype=float16" if asked == "fp16" else "the launch's mixed_precision=fp16"
        raise ConfigError(
            f"{source}: fp16 training needs loss scaling, which vlm-r1 does not do; use "
            "model.dtype: bfloat16 (bf16 compute with fp32 master weights) or float32"
        )
    if launch not in ("no", "bf16"):
        raise ConfigError(
            f"the launch asks for mixed_precision={launch!r}; vlm-r1 trains in bf16 or fp32"
        )
    return asked if asked != "no" else launch


def requested_engine(env: Mapping[str, str] | None = None) -> EngineRequest:
    """The engine ``accelerate launch`` was asked for (``replicated`` when none was)."""
    env = os.environ if env is None else env
    deepspeed = _true(env.get("ACCELERATE_USE_DEEPSPEED"))
    fsdp = _true(env.get("ACCELERATE_USE_FSDP"))
    if deepspeed and fsdp:
        raise ConfigError("the launch asks for both DeepSpeed and FSDP; pick one")
    if fsdp:
        version = env.get("FSDP_VERSION", "1")
        if version != "2":
            raise ConfigError(
                f"FSDP version {version} was requested; vlm-r1 shards with FSDP2 only "
                "(set fsdp_version: 2, as configs/accelerate/fsdp.yaml does)"
            )
        if _true(env.get("FSDP_OFFLOAD_PARAMS")):
            raise ConfigError(
                "FSDP parameter offload was requested; vlm-r1's FSDP2 keeps parameters on the "
                "accelerator (set fsdp_offload_params: false, or use DeepSpeed ZeRO-3 offload)"
            )
        return EngineRequest(
            "fsdp2", reshard_after_forward=_true(env.get("FSDP_RESHARD_AFTER_FORWARD", "true"))
        )
    if not deepspeed:
        return EngineRequest("replicated")
    try:
        import deepspeed as _  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            "the launch asks for DeepSpeed, which is not installed: "
            "pip install 'vlm-r1[deepspeed]' (or launch without --use_deepspeed)"
        ) from err
    config = _read_deepspeed_config(env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"))
    stage = config.get("zero_optimization", {}).get("stage")
    if stage is None:
        stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
        config.setdefault("zero_optimization", {})["stage"] = stage
    if stage not in (2, 3):
        raise ConfigError(
            f"DeepSpeed ZeRO stage {stage} was requested; vlm-r1 supports stages 2 and 3"
        )
    return EngineRequest(
        "deepspeed",
        zero_stage=int(stage),
        deepspeed_config=config,
        zero3_init=_true(env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "false")),
    )


def _read_deepspeed_config(file: str | None) -> dict[str, Any]:
    if not file or file.lower() == "none":
        return {}
    path = Path(file)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"DeepSpeed config {path}: cannot be read ({err})") from err
    if not isinstance(config, dict):
        raise ConfigError(f"DeepSpeed config {path}: not a JSON object")
    return config


def deepspeed_config(request: EngineRequest, max_grad_norm: float | None) -> dict[str, Any]:
    """The user's DeepSpeed JSON with the fields vlm-r1 owns filled in.

    vlm-r1 runs its own micro-batch loop (one ``engine.step`` per GRPO/SFT step, accumulation
    boundaries marked by hand), so the JSON's batch sizes and accumulation steps are fixed to 1;
    clipping follows ``optim.max_grad_norm``; with bf16, DeepSpeed checks gradients for
    non-finite values so a bad step is skipped (and counted) as under the other engines.
    Every checkpoint holds plain HF weights, so ZeRO-3 gathers them on save. Bucket sizes
    left at ``"auto"`` are filled once the model is loaded (``fill_auto_buckets``); accelerate
    resolves the remaining ``"auto"`` values (precision).
    """
    config = json.loads(json.dumps(request.deepspeed_config or {}))
    config["train_micro_batch_size_per_gpu"] = 1
    config["gradient_accumulation_steps"] = 1
    config.pop("train_batch_size", None)
    config["gradient_clipping"] = float(max_grad_norm or 0.0)
    config.setdefault("steps_per_print", 10**9)
    if isinstance(config.get("bf16"), dict):
        config["bf16"].setdefault("check_grad_overflow", True)
    zero = config.setdefault("zero_optimization", {})
    zero["compute_grad_norm"] = True  # the non-finite check reads it (and grad_norm is logged)
    if zero.get("stage") == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return config


def fill_auto_buckets(config: dict[str, Any], hidden_size: int | None) -> None:
    """Bucket sizes left at ``"auto"`` from the text model's hidden size (the rule accelerate
    and TRL use; accelerate cannot find the size on a VLM, whose config nests it)."""
    zero = config.setdefault("zero_optimization", {})
    auto = {
        "reduce_bucket_size": lambda h: h * h,
        "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
        "stage3_param_persistence_threshold": lambda h: 10 * h,
    }
    for key, rule in auto.items():
        if zero.get(key) == "auto":
            if hidden_size is None:
                raise ConfigError(
                    f"DeepSpeed config zero_optimization.{key} is 'auto' but the model states "
                    "no hidden size; set a number"
                )
            zero[key] = rule(hidden_size)
