"""What every training recipe (GRPO, SFT) shares: the accelerator, the model with its freezing
and LoRA, the processor, optimiser and schedule, metric logging, atomic checkpoints and resume.

Recipes compose an ``Engine`` rather than inherit from a trainer class: the GRPO loop and the
SFT loop stay short and read in their own order, and a checkpoint written by either one has
the same layout (see ``checkpoint.py``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlm_r1 import checkpoint as ckpt
from vlm_r1 import run_folder
from vlm_r1.config import (
    CheckpointConfig,
    ConfigError,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
)
from vlm_r1.distributed import compute_precision, make_parallelism, requested_engine
from vlm_r1.distributed.parallelism import held_fraction
from vlm_r1.errors import TrainingInterrupted
from vlm_r1.models import load_model
from vlm_r1.policy.prompts import write_prompt_file
from vlm_r1.tracking import MetricsWriter, drop_history_after, tracker_name

logger = logging.getLogger(__name__)


def fused_adamw_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel takes every parameter (floating point, on a device it
    has the kernel for: CPU, CUDA and others). Fused is one pass per parameter with no
    temporaries; torch's default on CPU is the for-loop AdamW, which allocates two
    parameter-sized temporaries per step (at a 151,936 x 2048 embedding, 2.5 GB at the peak)."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    return bool(params) and all(
        p.device.type in devices and torch.is_floating_point(p) for p in params
    )


@dataclass
class EngineConfig:
    model: ModelConfig
    optim: OptimConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig
    seed: int
    full_config: dict[str, Any]
    keep_reference: bool = False  # a frozen copy for a KL term (full fine-tuning only)
    #: The recipe's config with every setting at its default (``run_folder.plan_run``).
    default_config: dict[str, Any] | None = None


class Engine:
    def __init__(self, config: EngineConfig):
        from accelerate.utils import set_seed

        self.config = config
        self.output_dir = Path(config.checkpoint.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tracker = tracker_name(config.logging.report_to)
        # The engine asked for (accelerate launch's environment) is the one that runs, or a
        # ConfigError says why not; the run records which one it is.
        self.parallel = make_parallelism(
            requested_engine(),
            config.optim.max_grad_norm,
            tracker,
            str(self.output_dir),
            compute_precision(config.model.dtype, os.environ.get("ACCELERATE_MIXED_PRECISION")),
        )
        self.accelerator = self.parallel.accelerator
        config.full_config = {**config.full_config, "launch": self.parallel.record.as_dict()}
        # Before the model loads: refuse a wrong start/resume in seconds, not minutes.
        self.plan = run_folder.plan_run(
            config.checkpoint, config.full_config, config.default_config
        )
        processes = self.accelerator.num_processes
        if config.optim.prompts_per_step % processes:
            raise ConfigError(
                f"optim.prompts_per_step={config.optim.prompts_per_step} cannot be split evenly "
                f"over {processes} processes"
            )
        if self.accelerator.is_main_process:
            logger.info(
                "engine: %s; precision: %s",
                self.parallel.record.describe(),
                self.parallel.record.describe_precision(),
            )
            if config.checkpoint.overwrite:
                run_folder.clear_run(self.output_dir)
        self.accelerator.wait_for_everyone()
        set_seed(config.seed)
        self.adapter, model, self.processor = self._load_base()
        tokenizer = self.processor.tokenizer
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.ref_model = (
            self.parallel.reference(model, lambda: self._load_base()[1])
            if config.keep_reference and not config.model.lora.enabled
            else None
        )
        self.model, self.optimizer, self.scheduler = self.parallel.prepare(
            self._trainable(model), self._make_optimizer, self._make_scheduler
        )
        if self.accelerator.is_main_process and self.parallel.shards_parameters:
            logger.info(
                "parameters held by each process: %.0f%%", 100 * held_fraction(self.unwrapped())
            )
        if tracker:
            self.accelerator.init_trackers("vlm-r1", config=_flat(config.full_config))
        self.metrics = MetricsWriter(
            self.accelerator, self.output_dir, self.accelerator.is_main_process
        )
        if self.accelerator.is_main_process:
            run_folder.log_changes(self.plan.changes)
            (self.output_dir / run_folder.CONFIG_FILE).write_text(
                json.dumps(config.full_config, indent=2)
            )

    def _load_base(self) -> tuple[Any, torch.nn.Module, Any]:
        """The base model in the dtype its parameters are held in: float32 masters for full
        fine-tuning (``model.dtype`` is the compute dtype, see ``compute_precision``); under
        LoRA the frozen base is never stepped, so it stays in ``model.dtype`` (half the
        memory) and peft keeps the adapters in float32."""
        m = self.config.model
        return load_model(
            m.path,
            m.family,
            dtype=m.dtype if m.lora.enabled else "float32",
            attn_implementation=m.attn_implementation,
            min_pixels=m.min_pixels,
            max_pixels=m.max_pixels,
        )

    def _make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        o = self.config.optim
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            params,
            lr=o.learning_rate,
            weight_decay=o.weight_decay,
            betas=(o.adam_beta1, o.adam_beta2),
            fused=fused_adamw_supported(params),
        )

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda)

    # --------------------------------------------------------------------------- model
    def _trainable(self, model: torch.nn.Module) -> torch.nn.Module:
        cfg = self.config.model
        if cfg.freeze_vision:
            for _, param in self.adapter.vision_parameters(model):
                param.requires_grad_(False)
        if cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            targets = cfg.lora.target_modules or self.adapter.lora_target_regex()
            model = get_peft_model(
                model,
                LoraConfig(
                    r=cfg.lora.r,
                    lora_alpha=cfg.lora.alpha,
                    lora_dropout=cfg.lora.dropout,
                    target_modules=targets,
                ),
            )
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            if cfg.lora.enabled:
                model.enable_input_require_grads()
        model.train()
        return model

    @contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference policy for the KL term: the frozen copy, or the LoRA model with adapters off."""
        if self.ref_model is not None:
            with self.parallel.precision_context():
                yield self.ref_model
            return
        with self.unwrapped().disable_adapter():
            yield self.model

    def precision_context(self) -> Any:
        """Context for a forward that bypasses the prepared model's ``forward`` (e.g. calling
        its vision encoder): the run's compute precision (bf16 autocast when mixed)."""
        return self.parallel.precision_context()

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @contextmanager
    def for_generation(self) -> Iterator[torch.nn.Module]:
        """The policy with every parameter resident, for ``generate(synced_gpus=False)``:
        gathered under ZeRO-3, unsharded under FSDP2, so each process generates on its own
        schedule (different lengths, different prompt counts) without waiting on the others."""
        with self.parallel.for_generation(self.model) as model:
            yield model

    # ----------------------------------------------------------------------- optimiser
    def _lr_lambda(self, step: int) -> float:
        cfg = self.config.optim
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "cosine":
            progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    def micro_batch(self, last: bool) -> Any:
        """Context for one micro-batch's forward and backward (DDP synchronises on the last)."""
        return self.parallel.micro_batch(self.model, last)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Back-propagate one micro-batch's loss, already normalised over the whole step."""
        self.parallel.backward(self.model, loss, last)

    def optimizer_step(self) -> tuple[float, bool]:
        """Clip, then step if the gradient is finite; returns ``(grad_norm, stepped)``.

        Gradients are already averaged over processes, so every process sees the same norm and
        makes the same skip decision.
        """
        return self.parallel.step(
            self.model, self.optimizer, self.scheduler, self.config.optim.max_grad_norm
        )

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps taken in this run, resumed runs included (skipped steps excluded)."""
        return self.parallel.optimizer_steps

    # ---------------------------------------------------------------------- reductions
    def all_ranks_min(self, value: int) -> int:
        if self.accelerator.num_processes == 1:
            return value
        tensor = torch.tensor([value], device=self.accelerator.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN)
        return int(tensor.item())

    def mean_over_ranks(self, value: Any) -> torch.Tensor:
        return self.metrics_mean_over_ranks({"value": value})["value"]

    def metrics_mean_over_ranks(self, metrics: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Scalar metrics averaged over processes in one collective (keys in sorted order).

        NaN means "undefined on this process" (e.g. box monitors on a batch without box tasks):
        it is left out of the mean, and the result is NaN only where every process had NaN.
        """
        keys = sorted(metrics)
        stacked = torch.stack(
            [torch.as_tensor(metrics[k], dtype=torch.float32).detach().reshape(()) for k in keys]
        )
        if self.accelerator.num_processes > 1:
            return dict(zip(keys, nan_mean_reduce(stacked, self.accelerator).unbind(), strict=True))
        return dict(zip(keys, stacked.unbind(), strict=True))

    # --------------------------------------------------------------------- checkpoints
    def save(self, step: int, state: dict[str, Any], final: bool = False) -> Path | None:
        """Write ``checkpoint-<step>`` atomically.

        Every process joins the collectives (the full state dict, sharded optimizer state) and
        writes its RNG state; the main process writes the shared files and commits.
        """
        acc = self.accelerator
        acc.wait_for_everyone()
        stage = ckpt.staging_dir(self.output_dir, step)
        if acc.is_main_process:
            ckpt.begin(self.output_dir, step)
        acc.wait_for_everyone()
        weights = self.parallel.full_state_dict(self.model)
        if acc.is_main_process:
            self._save_model(stage / "model", weights)
        self.parallel.save_optimizer(stage, self.model, self.optimizer, self.scheduler)
        ckpt.write_rank_state(stage, acc.process_index)
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            full_state = {
                **state,
                "step": step,
                "world_size": acc.num_processes,
                "launch": self.parallel.record.as_dict(),
                "optimizer_steps": self.optimizer_steps,
                "lora": self.config.model.lora.enabled,
            }
            (stage / run_folder.CONFIG_FILE).write_text(
                json.dumps(self.config.full_config, indent=2)
            )
            ckpt.write_state(stage, full_state)
            path = ckpt.commit(self.output_dir, step, self.config.checkpoint.keep_last)
            if final:
                self._save_final(self.output_dir / "final", weights)
                self.metrics.publish_rollouts()  # the last step's table (written after its log)
        acc.wait_for_everyone()
        if final and acc.is_main_process and self.config.checkpoint.push_to_hub:
            self._push_final()  # after the barrier: the other processes are not kept waiting
        return path

    def _save_model(self, folder: Path, weights: dict[str, torch.Tensor]) -> None:
        self.unwrapped().save_pretrained(folder, state_dict=weights)
        self.processor.save_pretrained(folder)
        write_prompt_file(folder, self.config.full_config.get("prompt"))
        if self.config.model.lora.enabled and self.config.model.lora.save_merged:
            self._save_merged(folder / "merged", weights)

    def _save_merged(self, folder: Path, weights: dict[str, torch.Tensor]) -> None:
        """The base model with the trained adapter merged in (a plain HF checkpoint).

        Built from a fresh load of the base on this process, not from the live model, whose
        parameters may be sharded over processes."""
        from peft import get_peft_model

        with self.parallel.local_load():
            base = self._load_base()[1]
        merged = get_peft_model(base, self.unwrapped().peft_config["default"])
        merged.load_state_dict(weights, strict=True)
        merged.merge_and_unload().save_pretrained(folder)
        self.processor.save_pretrained(folder)
        write_prompt_file(folder, self.config.full_config.get("prompt"))

    def _save_final(self, folder: Path, weights: dict[str, torch.Tensor]) -> None:
        """A plain checkpoint that ``AutoModelForImageTextToText.from_pretrained`` loads (LoRA
        merged), with its model card (``README.md``: base model, data, rewards, recipe, final
        metrics, command), so that ``final/`` is complete the moment it appears."""
        from vlm_r1 import model_card

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if self.config.model.lora.enabled:
            self._save_merged(tmp, weights)
        else:
            self._save_model(tmp, weights)
        model_card.write_card(
            tmp,
            self.config.full_config,
            model_card.last_metrics(self.output_dir),
            model_card.current_command(),
        )
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def _push_final(self) -> None:
        """Upload ``final/`` to ``checkpoint.push_to_hub`` (main process, end of training). A
        failure raises ``PushError`` after the model is safely on disk; ``vlm-r1 push`` retries."""
        from vlm_r1 import model_card

        settings = self.config.checkpoint
        try:
            url = model_card.push_run(
                self.output_dir,
                settings.push_to_hub,
                settings.push_private,
                "checkpoint.push_to_hub",
            )
        except model_card.PushError as err:
            raise model_card.PushError(
                f"{err}. The model is saved in {self.output_dir / 'final'}; upload it with "
                f"`vlm-r1 push {self.output_dir} --repo {settings.push_to_hub}`"
            ) from err
        logger.info("pushed %s to %s", self.output_dir / "final", url)

    def resume(self) -> dict[str, Any] | None:
        """Restore the checkpoint chosen by ``run_folder.plan_run``; returns its trainer state.

        The run's history is cut back to that step (metrics rows and rollout files written
        after it by the interrupted process), so every step appears once in the resumed run.
        """
        path = self.plan.checkpoint
        if path is None:
            if self.config.checkpoint.resume != "none":
                self._drop_history_after(0)  # killed before its first checkpoint
            return None
        state = ckpt.read_state(path)
        if not self.parallel.optimizer_state_holds_weights:
            self._load_weights(path / "model")
        self.parallel.load_optimizer(path, self.model, self.optimizer, self.scheduler)
        ckpt.load_rank_state(path, self.accelerator.process_index)
        self.parallel.optimizer_steps = int(state.get("optimizer_steps", state["step"]))
        self._drop_history_after(int(state["step"]))
        if self.accelerator.is_main_process:
            logger.warning("resumed from %s at step %d", path, state["step"])
        return state

    def _drop_history_after(self, step: int) -> None:
        if self.accelerator.is_main_process:
            drop_history_after(self.output_dir, step)
        self.accelerator.wait_for_everyone()

    def _load_weights(self, folder: Path) -> None:
        """Full weights go through ``from_pretrained`` (which maps on-disk key names such as
        Qwen's ``visual.*`` to the module tree) and are copied in; LoRA loads the adapter."""
        from safetensors.torch import load_file

        model = self.unwrapped()
        if self.config.model.lora.enabled:
            self.parallel.load_adapter(model, load_file(folder / "adapter_model.safetensors"))
            return
        from transformers import AutoModelForImageTextToText

        try:
            with self.parallel.local_load():
                saved = AutoModelForImageTextToText.from_pretrained(
                    folder, dtype=next(model.parameters()).dtype
                )
        except (OSError, ValueError) as err:
            raise ckpt.CheckpointError(folder, f"the model cannot be loaded ({err})") from err
        self.parallel.load_weights(model, saved.state_dict())

    def cleanup(self) -> None:
        """End the run: the model, its reference and the optimizer are released (accelerate's
        own references too, then a garbage collection), then trackers finish and the process
        group goes. Released first because a sharded model holds the process group and its last
        collectives' handles: freed only at the interpreter's exit, gloo's worker threads may
        still hold work there, a known cause of aborts at exit (pytorch/pytorch PR 179291)."""
        self.model = self.ref_model = self.optimizer = self.scheduler = None
        self.accelerator.free_memory()
        self.accelerator.end_training()


def launched_as_main_process() -> bool:
    """Whether this is rank 0, before any process group exists (``torchrun`` and ``accelerate
    launch`` set ``RANK``; a plain run has none). Used for log lines printed before the Engine."""
    return int(os.environ.get("RANK", "0")) == 0


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and exits at a safe point.

    ``raise_if_requested(step)`` then raises ``TrainingInterrupted``, so the command exits with
    ``128 + signum`` (143 for SIGTERM) rather than 0: the job did not finish.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.signum = signum

    def raise_if_requested(self, step: int) -> None:
        if self.requested and self.signum is not None:
            raise TrainingInterrupted(self.signum, step)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Progress:
    """A rich progress bar; ``update(metrics)`` advances it and shows a few numbers."""

    def __init__(self, enabled: bool, total: int, start: int, label: str, fields: tuple[str, ...]):
        self.enabled, self.total, self.start, self.label, self.fields = (
            enabled,
            total,
            start,
            label,
            fields,
        )

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.label, total=self.total, completed=self.start, info=""
            )
        return self

    def update(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            info = "  ".join(f"{k} {metrics[k]:.3g}" for k in self.fields if k in metrics)
            self._bar.update(self._task, advance=1, info=info)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)


def nan_mean_reduce(values: torch.Tensor, accelerator: Any) -> torch.Tensor:
    """Mean over processes of each entry, ignoring NaN entries (one all-reduce of sums + counts)."""
    defined = ~torch.isnan(values)
    packed = torch.cat([torch.where(defined, values, 0.0), defined.float()])
    total = accelerator.reduce(packed.to(accelerator.device), "sum").cpu()
    sums, counts = total.chunk(2)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
