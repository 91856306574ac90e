"""One interface over the three engines, so the GRPO and SFT loops read the same under each.

A step is always: for each micro-batch ``backward(loss, last=...)``, then one ``step()``. Each
micro-batch's loss is already normalised over the whole step (as in one process), so no engine
may rescale it, and the optimiser steps exactly once per training step under every engine
(``optimizer_steps`` counts it, from a hook on the torch optimiser itself).

Collectives (full state dicts, sharded checkpoints) are called on every process; only the main
process writes the shared files. Generation runs on fully resident parameters (gathered under
ZeRO-3, unsharded under FSDP2) with ``synced_gpus=False``, so processes generate different
lengths and different numbers of prompts without waiting on each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from vlm_r1.checkpoint import DEEPSPEED_TAG, OPTIMIZER_FILES, CheckpointError, load_tensors
from vlm_r1.config import ConfigError
from vlm_r1.distributed.launch import (
    EngineRecord,
    EngineRequest,
    deepspeed_config,
    fill_auto_buckets,
)

OPTIMIZER_FILE = OPTIMIZER_FILES["replicated"]
FSDP_OPTIMIZER_DIR = OPTIMIZER_FILES["fsdp2"]
DEEPSPEED_DIR = OPTIMIZER_FILES["deepspeed"]


class Parallelism:
    """Plain PyTorch / DDP through accelerate (one process, or data parallel)."""

    shards_parameters = False
    #: Whether ``load_optimizer`` also restores the weights (else they load from ``model/``).
    optimizer_state_holds_weights = False

    def __init__(self, accelerator: Any, record: EngineRecord):
        self.accelerator = accelerator
        self.record = record
        self.optimizer_steps = 0

    # ---------------------------------------------------------------------------- set-up
    def reference(self, model: torch.nn.Module, load_fresh: Callable[[], torch.nn.Module]):
        """A frozen copy of the initial policy for the KL term."""
        import copy

        return _frozen(copy.deepcopy(model)).to(self.accelerator.device)

    def precision_context(self) -> Any:
        """Context for forwards that do not go through the prepared policy's ``forward`` (the
        frozen reference, the vision encoder called directly): the policy's precision.
        accelerate runs the prepared policy under autocast (mixed_precision bf16), so these run
        under it too; without it the reference's step-1 KL is not 0 and the encoder computes in
        fp32. FSDP2 and DeepSpeed carry precision in the model itself."""
        return self.accelerator.autocast()

    def prepare(
        self, model: torch.nn.Module, make_optimizer: Callable, make_scheduler: Callable
    ) -> tuple[Any, Any, Any]:
        """Wrap the model; build the optimizer over the parameters the engine trains."""
        optimizer = make_optimizer(model)
        optimizer.register_step_post_hook(self._count_step)
        return self.accelerator.prepare(model, optimizer, make_scheduler(optimizer))

    def local_load(self):
        """Context for loading a model on one process only (no collective initialisation)."""
        return nullcontext()

    def _count_step(self, *_: Any) -> None:
        self.optimizer_steps += 1

    # -------------------------------------------------------------------------- the step
    def micro_batch(self, model: torch.nn.Module, last: bool):
        """Context of one micro-batch's forward and backward: gradients are synchronised once,
        on the last micro-batch of the step."""
        return nullcontext() if last else self.accelerator.no_sync(model)

    def backward(self, model: torch.nn.Module, loss: torch.Tensor, last: bool) -> None:
        loss.backward()

    def step(
        self, model: torch.nn.Module, optimizer: Any, scheduler: Any, max_grad_norm: float | None
    ) -> tuple[float, bool]:
        """Clip, then step if the gradient is finite; returns ``(grad_norm, stepped)``.

        Gradients are already averaged over processes, so every process sees the same norm and
        makes the same skip decision.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        norm = _to_float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")))
        stepped = math.isfinite(norm)
        if stepped:
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm, stepped

    # ------------------------------------------------------------------------ generation
    @contextmanager
    def for_generation(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model with every parameter resident, for ``generate(synced_gpus=False)``."""
        yield self.accelerator.unwrap_model(model)

    # ----------------------------------------------------------------------- checkpoints
    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every weight, unsharded, for the main process to save (empty on the others).

        Call it on every process: under FSDP2 and ZeRO-3 it is a collective."""
        if not self.accelerator.is_main_process:
            return {}
        return self.accelerator.get_state_dict(model)

    def save_optimizer(self, stage: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
        """Optimizer and scheduler state (called on every process)."""
        if self.accelerator.is_main_process:
            torch.save(optimizer.state_dict(), stage / OPTIMIZER_FILE)
            torch.save(scheduler.state_dict(), stage / "scheduler.pt")

    def load_optimizer(self, path: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
        optimizer.load_state_dict(load_tensors(path / OPTIMIZER_FILE))
        scheduler.load_state_dict(load_tensors(path / "scheduler.pt"))

    def load_weights(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Copy full weights into the (unwrapped) model; keys as in ``model.state_dict()``."""
        model.load_state_dict(state, strict=True)

    def load_adapter(self, model: torch.nn.Module, adapter: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, adapter)


class FSDP2(Parallelism):
    """``fully_shard`` on every transformer block (the model's ``_no_split_modules``), then on
    the root: parameters, gradients and optimizer state are sharded over the processes."""

    shards_parameters = True

    def __init__(self, accelerator: Any, record: EngineRecord, request: EngineRequest):
        super().__init__(accelerator, record)
        from torch.distributed.device_mesh import init_device_mesh

        device = accelerator.device.type
        self.mesh = init_device_mesh(device, (accelerator.num_processes,))
        self.reshard_after_forward = request.reshard_after_forward
        precision = accelerator.mixed_precision
        if precision not in ("no", "bf16"):
            raise ConfigError(f"FSDP2 runs in bf16 or fp32; mixed_precision={precision!r}")
        # bf16 compute and gathers, fp32 gradient reduction, fp32 master parameters (the
        # shards the optimizer steps); accelerate's autocast is not used, the policy is.
        self.compute_dtype = torch.bfloat16 if precision == "bf16" else None

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        model = model.to(self.accelerator.device)
        policy = MixedPrecisionPolicy(
            param_dtype=self.compute_dtype,
            reduce_dtype=torch.float32 if self.compute_dtype else None,
        )
        blocks = [m for m in model.modules() if type(m).__name__ in _block_names(model)]
        if not blocks:
            raise ConfigError(
                f"FSDP2: {type(model).__name__} names no transformer blocks (_no_split_modules) "
                "to shard"
            )
        for module in [*blocks, model]:
            fully_shard(
                module,
                mesh=self.mesh,
                reshard_after_forward=self.reshard_after_forward,
                mp_policy=policy,
            )
        return model

    def reference(self, model: torch.nn.Module, load_fresh: Callable[[], torch.nn.Module]):
        # The policy is not sharded yet, but a deepcopy would share nothing with its later
        # shards anyway: shard a fresh load the same way (each process keeps 1/N of it).
        return self.shard(_frozen(load_fresh()))

    def prepare(
        self, model: torch.nn.Module, make_optimizer: Callable, make_scheduler: Callable
    ) -> tuple[Any, Any, Any]:
        # The optimizer is built over the sharded (DTensor) parameters.
        model = self.shard(model)
        optimizer = make_optimizer(model)
        optimizer.register_step_post_hook(self._count_step)
        return model, optimizer, make_scheduler(optimizer)

    def precision_context(self) -> Any:
        return nullcontext()

    def micro_batch(self, model: torch.nn.Module, last: bool):
        # Every micro-batch reduce-scatters its gradients into the shards (correct and simple;
        # deferring it would keep unsharded gradients for the whole step).
        return nullcontext()

    @contextmanager
    def for_generation(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield model
        finally:
            for unit in units:
                unit.set_reshard_after_forward(self.reshard_after_forward, recurse=False)
                unit.reshard()

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def save_optimizer(self, stage: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        dcp.save(
            {"optimizer": get_optimizer_state_dict(model, optimizer)},
            checkpoint_id=stage / FSDP_OPTIMIZER_DIR,
        )
        if self.accelerator.is_main_process:
            torch.save(scheduler.state_dict(), stage / "scheduler.pt")

    def load_optimizer(self, path: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        state = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # initialises state
        folder = path / FSDP_OPTIMIZER_DIR
        try:
            dcp.load(state, checkpoint_id=folder)
        except Exception as err:  # DCP wraps reader errors in CheckpointException
            raise CheckpointError(
                folder, f"cannot be loaded ({type(err).__name__}: {err})"
            ) from err
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
        scheduler.load_state_dict(load_tensors(path / "scheduler.pt"))

    def load_weights(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def load_adapter(self, model: torch.nn.Module, adapter: dict[str, torch.Tensor]) -> None:
        """The adapter file's keys lack peft's adapter name (``lora_A.weight`` for
        ``lora_A.default.weight``); map them and load into the shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        name = getattr(model, "active_adapter", "default")
        keys = {k.replace(f".{name}.", "."): k for k, p in model.named_parameters()}
        missing = sorted(k for k in adapter if k not in keys)
        if missing:
            raise CheckpointError(Path("adapter_model.safetensors"), f"unknown keys {missing[:3]}")
        set_model_state_dict(
            model,
            {keys[k]: v for k, v in adapter.items()},
            options=StateDictOptions(full_state_dict=True, strict=False),
        )


class DeepSpeedZeRO(Parallelism):
    """ZeRO-2/3 through accelerate's DeepSpeed plugin, with vlm-r1's own micro-batch loop."""

    def __init__(self, accelerator: Any, record: EngineRecord):
        super().__init__(accelerator, record)
        self.shards_parameters = record.zero_stage == 3

    @property
    def plugin(self) -> Any:
        return self.accelerator.state.deepspeed_plugin

    def reference(self, model: torch.nn.Module, load_fresh: Callable[[], torch.nn.Module]):
        """The reference goes through DeepSpeed as an inference engine (as TRL does), so it
        computes in the policy's precision (DeepSpeed casts both to bf16 when asked): a plain
        fp32 copy would give a non-zero KL at step 1. ZeRO-3 partitions its parameters (at
        load time, with zero3_init, where a deepcopy would copy empty shards), so it is a fresh
        load; under ZeRO-2 it is an unsharded copy (stage 0)."""
        import copy

        import deepspeed

        config = {
            k: v
            for k, v in self.plugin.deepspeed_config.items()
            if k not in ("optimizer", "scheduler")
        }
        if self.record.zero_stage == 3:
            source = load_fresh()
        else:
            source = copy.deepcopy(model)
            config["zero_optimization"] = {"stage": 0}
        engine, *_ = deepspeed.initialize(model=_frozen(source), config=config)
        engine.eval()  # DeepSpeedEngine.eval returns None
        return engine

    def prepare(
        self, model: torch.nn.Module, make_optimizer: Callable, make_scheduler: Callable
    ) -> tuple[Any, Any, Any]:
        fill_auto_buckets(self.plugin.deepspeed_config, _hidden_size(model))
        if self.record.zero_stage == 3:
            # transformers 5 records extra legacy renamings on a model loaded under ZeRO-3
            # (zero.Init); reverting them on save writes Qwen's "model.layers.*" as
            # "model.model.layers.*", which no loader maps back. Without the record,
            # save_pretrained uses the family's default mapping, as for a plain load.
            for module in model.modules():
                if "_weight_conversions" in vars(module):
                    del module._weight_conversions
        return super().prepare(model, make_optimizer, make_scheduler)

    @contextmanager
    def local_load(self) -> Iterator[None]:
        """transformers partitions every model it loads while a ZeRO-3 config is registered
        (a collective per parameter); a load on one process must not see it. (accelerate's
        ``zero3_init_context_manager(enable=False)`` registers the same ZeRO-3 config again.)"""
        from transformers.integrations.deepspeed import (
            set_hf_deepspeed_config,
            unset_hf_deepspeed_config,
        )

        registered = getattr(self.plugin, "dschf", None)
        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            if registered is not None:
                set_hf_deepspeed_config(registered)

    def precision_context(self) -> Any:
        return nullcontext()

    def micro_batch(self, model: torch.nn.Module, last: bool):
        return nullcontext()

    def backward(self, model: Any, loss: torch.Tensor, last: bool) -> None:
        # Mark the accumulation boundary by hand (the config says 1 step of accumulation, so
        # DeepSpeed's own counter would call every micro-batch a boundary), and keep the loss
        # as it is: it is already normalised over the step.
        model.set_gradient_accumulation_boundary(last)
        model.backward(loss, scale_wrt_gas=False)

    def step(
        self, model: Any, optimizer: Any, scheduler: Any, max_grad_norm: float | None
    ) -> tuple[float, bool]:
        """DeepSpeed clips (``gradient_clipping``), skips a non-finite step, steps the
        scheduler and zeroes the gradients itself."""
        before = self.optimizer_steps
        model.step()
        norm = model.get_global_grad_norm()
        return (float("nan") if norm is None else _to_float(norm)), self.optimizer_steps > before

    @contextmanager
    def for_generation(self, model: Any) -> Iterator[torch.nn.Module]:
        if self.record.zero_stage != 3:
            yield model.module
            return
        import deepspeed

        offload = model.optimizer.parameter_offload
        with deepspeed.zero.GatheredParameters(list(model.module.parameters())):
            # Without its hooks the module keeps the gathered weights through every forward;
            # with them, each forward would release and re-gather (a collective) per layer.
            offload._remove_module_hooks()
            offload.forward_hooks.clear()
            offload.backward_hooks.clear()
            try:
                yield model.module
            finally:
                offload.setup_zero_stage3_hooks()

    def save_optimizer(self, stage: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
        model.save_checkpoint(
            stage / DEEPSPEED_DIR,
            tag=DEEPSPEED_TAG,
            save_latest=False,
            exclude_frozen_parameters=True,
        )

    def load_optimizer(self, path: Path, model: Any, optimizer: Any, scheduler: Any) -> None:
        folder = path / DEEPSPEED_DIR / DEEPSPEED_TAG
        check_deepspeed_files(folder)
        loaded, _ = model.load_checkpoint(
            path / DEEPSPEED_DIR,
            tag=DEEPSPEED_TAG,
            load_module_strict=False,  # frozen parameters are not in it
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if loaded is None:
            raise CheckpointError(folder, "DeepSpeed could not load it")

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        if self.record.zero_stage == 3:  # gathered from every process, kept on the main one
            return self.accelerator.get_state_dict(model)
        return super().full_state_dict(model)

    #: DeepSpeed's own checkpoint (``load_optimizer``) restores the trained weights too.
    optimizer_state_holds_weights = True


# ---------------------------------------------------------------------------------- helpers
def held_fraction(model: torch.nn.Module) -> float:
    """The share of the model's parameters this process holds (1.0 unless sharded)."""
    held = total = 0
    for param in model.parameters():
        if hasattr(param, "ds_numel"):  # ZeRO-3: the local partition is param.ds_tensor
            held += param.ds_tensor.numel()
            total += param.ds_numel
        elif hasattr(param, "to_local"):  # FSDP2: a DTensor sharded over the mesh
            held += param.to_local().numel()
            total += param.numel()
        else:
            held += param.numel()
            total += param.numel()
    return held / max(total, 1)


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


def _to_float(norm: Any) -> float:
    if hasattr(norm, "full_tensor"):  # a DTensor norm over sharded gradients
        norm = norm.full_tensor()
    return float(norm)


def _block_names(model: torch.nn.Module) -> set[str]:
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


def _hidden_size(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for candidate in (getattr(config, "text_config", None), config):
        size = getattr(candidate, "hidden_size", None)
        if isinstance(size, int):
            return size
    return None


#: Classes DeepSpeed's checkpoint files hold besides tensors and containers; anything else in
#: them is refused before DeepSpeed unpickles the files (a checkpoint must not run code).
def _deepspeed_safe_globals() -> list[Any]:
    import argparse
    import collections

    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [
        argparse.Namespace,
        collections.OrderedDict,
        LossScaler,
        DynamicLossScaler,
        ZeroStageEnum,
        fragment_address,
    ]


def check_deepspeed_files(folder: Path) -> None:
    """Each file loads with ``torch.load(weights_only=True)`` allowing only the classes above."""
    files = sorted(folder.glob("*.pt"))
    if not files:
        raise CheckpointError(folder, "no DeepSpeed checkpoint files")
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        for file in files:
            load_tensors(file)


def make_parallelism(
    request: EngineRequest,
    max_grad_norm: float | None,
    tracker: str | None,
    project_dir: str,
    mixed_precision: str = "no",
) -> Parallelism:
    """Create the accelerator for ``request`` and check that the engine that runs is the one
    asked for (raising ``ConfigError`` if not).

    ``mixed_precision`` (from ``compute_precision``) overrides the launch's: the parameters
    stay float32 (the masters the optimizer steps) and accelerate turns on the engine's bf16
    compute (autocast, or DeepSpeed's ``bf16`` section; FSDP2 reads it for its policy)."""
    import os

    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if request.engine == "deepspeed":
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        if not cuda:
            # A CPU build of DeepSpeed would JIT-compile a shared-memory op at start (minutes);
            # gloo does the collectives instead.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        config = deepspeed_config(request, max_grad_norm)
        accelerator = Accelerator(
            log_with=tracker,
            project_dir=project_dir,
            mixed_precision=mixed_precision,
            deepspeed_plugin=DeepSpeedPlugin(
                hf_ds_config=config, zero3_init_flag=request.zero3_init
            ),
            kwargs_handlers=[] if cuda else [InitProcessGroupKwargs(backend="gloo")],
        )
        if accelerator.distributed_type.value != "DEEPSPEED":
            raise ConfigError(
                f"DeepSpeed was requested but accelerate set up {accelerator.distributed_type}"
            )
        record = EngineRecord(
            "deepspeed",
            accelerator.num_processes,
            request.zero_stage,
            mixed_precision=mixed_precision,
        )
        parallel: Parallelism = DeepSpeedZeRO(accelerator, record)
    else:
        # FSDP2 is applied by vlm-r1 (FSDP2.shard), so accelerate must not wrap the model too.
        hidden = {k: os.environ.pop(k) for k in ("ACCELERATE_USE_FSDP",) if k in os.environ}
        try:
            accelerator = Accelerator(
                cpu=not cuda,
                log_with=tracker,
                project_dir=project_dir,
                mixed_precision=mixed_precision,
            )
        finally:
            os.environ.update(hidden)
        if request.engine == "fsdp2":
            if accelerator.num_processes < 2:
                raise ConfigError(
                    "FSDP was requested for 1 process, which has nothing to shard with; launch "
                    "2 or more processes (--num_processes) or drop the FSDP config"
                )
            record = EngineRecord(
                "fsdp2", accelerator.num_processes, fsdp_version=2, mixed_precision=mixed_precision
            )
            parallel = FSDP2(accelerator, record, request)
        else:
            record = EngineRecord(
                "replicated", accelerator.num_processes, mixed_precision=mixed_precision
            )
            parallel = Parallelism(accelerator, record)
    return parallel
