"""The GRPO loop for vision-language models: rollout -> reward -> advantage -> update.

Thin orchestration over pure pieces (``advantages``, ``losses``, ``logprobs``) and helpers
(``sampling``, ``rollout``, ``scoring``, ``checkpoint``). One ``step()`` reads in the paper's
order; everything distributed goes through accelerate (CPU, DDP, FSDP, DeepSpeed).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlm_r1 import checkpoint as ckpt
from vlm_r1.config import TrainConfig, to_dict
from vlm_r1.data.jsonl import read_samples
from vlm_r1.models import load_model
from vlm_r1.rewards.format import is_strict_format
from vlm_r1.rl.advantages import ADVANTAGES, zero_variance_groups
from vlm_r1.rl.logprobs import completion_logprobs
from vlm_r1.rl.losses import LOSSES, LossInputs, LossSettings
from vlm_r1.rl.prompts import PreparedPrompt, prepare_prompt
from vlm_r1.rl.rollout import HFRollout, Rollout, SamplingParams
from vlm_r1.rl.sampling import PromptSampler
from vlm_r1.rl.scoring import build_rewards, score
from vlm_r1.tracking import MetricsWriter, tracker_name

logger = logging.getLogger(__name__)
#: Fault injection for tests: SIGKILL this process right after checkpoint N is committed.
FAULT_ENV = "VLM_R1_FAULT_KILL_AFTER_CHECKPOINT"


@dataclass
class StepBatch:
    """One step's scored rollout, ready for the policy update."""

    rollout: Rollout
    rewards: torch.Tensor  # [N]
    per_term: dict[str, torch.Tensor]
    advantages: torch.Tensor  # [N]
    details: list[dict]
    old_logps: torch.Tensor | None = None  # [N, T]
    ref_logps: torch.Tensor | None = None  # [N, T]
    zero_variance_fraction: float = 0.0
    rollout_seconds: float = 0.0


class GRPOTrainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.step = 0
        self.skipped_steps = 0
        self._stop_requested = False

    # ------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.config
        self.output_dir = Path(cfg.checkpoint.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tracker = tracker_name(cfg.logging.report_to)
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(), log_with=tracker, project_dir=str(self.output_dir)
        )
        set_seed(cfg.seed)
        processor_kwargs = {
            k: v
            for k, v in (("min_pixels", cfg.model.min_pixels), ("max_pixels", cfg.model.max_pixels))
            if v is not None
        }
        self.adapter, model, self.processor = load_model(
            cfg.model.path,
            cfg.model.family,
            dtype=cfg.model.dtype,
            attn_implementation=cfg.model.attn_implementation,
            processor_kwargs=processor_kwargs,
        )
        tokenizer = self.processor.tokenizer
        self.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.ref_model = self._reference(model)
        model = self._trainable(model)
        self.samples = self._load_data()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.optim.learning_rate,
            weight_decay=cfg.optim.weight_decay,
            betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_lambda)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            model, optimizer, scheduler
        )
        self.sampler = PromptSampler(
            len(self.samples),
            cfg.seed,
            cfg.data.shuffle,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        self.rollout_backend = self._rollout_backend()
        self.rewards = build_rewards(cfg.rewards)
        self.loss_fn = LOSSES[cfg.algo.loss_type]
        self.advantage_fn = ADVANTAGES[cfg.algo.scale_rewards]
        if tracker:
            self.accelerator.init_trackers("vlm-r1", config=_flat(to_dict(cfg)))
        self.metrics = MetricsWriter(
            self.accelerator, self.output_dir, self.accelerator.is_main_process
        )
        self._resume()
        if self.accelerator.is_main_process:
            (self.output_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))

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

    def _reference(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """A frozen copy for the KL term; none when beta = 0 or with LoRA (adapters disabled)."""
        if self.config.algo.beta == 0 or self.config.model.lora.enabled:
            return None
        ref = copy.deepcopy(model).eval()
        for param in ref.parameters():
            param.requires_grad_(False)
        return ref.to(self.accelerator.device)

    def _load_data(self) -> list:
        cfg = self.config.data
        reader = read_samples(
            cfg.train,
            cfg.image_folders,
            reward_methods=cfg.reward_methods,
            on_error=cfg.on_error,
            check_images=cfg.check_images,
        )
        samples = []
        for sample in reader:
            samples.append(sample)
            if cfg.max_samples and len(samples) >= cfg.max_samples:
                break
        if self.accelerator.is_main_process:
            logger.info("%s", reader.stats.summary())
        return samples

    def _rollout_backend(self) -> HFRollout:
        tokenizer = self.processor.tokenizer
        eos = tokenizer.convert_tokens_to_ids(self.adapter.eos_token)
        eos_ids = sorted({eos, tokenizer.eos_token_id} - {None})
        return HFRollout(
            self.processor, eos_ids, self.pad_token_id, self.adapter.forbidden_token_ids(tokenizer)
        )

    def _lr_lambda(self, step: int) -> float:
        cfg = self.config.optim
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "cosine":
            progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    # ------------------------------------------------------------------------------ loop
    def train(self) -> dict[str, float]:
        cfg = self.config
        last: dict[str, float] = {}
        previous = {
            sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            with _progress(
                cfg.logging.progress and self.accelerator.is_main_process,
                cfg.optim.max_steps,
                self.step,
            ) as bar:
                while self.step < cfg.optim.max_steps and not self._stop_requested:
                    batch = self.collect()
                    first_step = self.step
                    for _ in range(cfg.algo.num_iterations):
                        if self.step >= cfg.optim.max_steps:
                            break
                        started = time.perf_counter()
                        metrics = self.update(batch)
                        self.step += 1
                        metrics["step_seconds"] = (
                            time.perf_counter() - started + batch.rollout_seconds
                        )
                        last = self._log(batch, metrics)
                        bar(last)
                    self._log_rollouts(batch)
                    # Checkpoints fall on rollout-batch boundaries, so with num_iterations > 1 no
                    # half-used batch is lost and resume is exact.
                    crossed = (
                        self.step // cfg.checkpoint.save_steps
                        > first_step // cfg.checkpoint.save_steps
                    )
                    if crossed or self.step == cfg.optim.max_steps or self._stop_requested:
                        self.save()
            if self._stop_requested:
                logger.warning(
                    "stop requested: saving checkpoint at step %d and exiting", self.step
                )
                self.save()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return last

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def collect(self) -> StepBatch:
        """Rollout -> reward -> advantage (with DAPO dynamic sampling when enabled)."""
        cfg = self.config
        started = time.perf_counter()
        kept: list[tuple[Rollout, torch.Tensor, dict[str, torch.Tensor], list[dict]]] = []
        quota = cfg.optim.prompts_per_step // self.accelerator.num_processes
        rounds = 1 + (cfg.algo.max_resample_rounds if cfg.algo.dynamic_sampling else 0)
        total_groups = dropped = 0
        for _ in range(rounds):
            rollout = self.rollout(cfg.optim.prompts_per_step)
            rewards, per_term, details = score(self.rewards, rollout)
            zero = zero_variance_groups(rewards, rollout.group_size)
            total_groups += len(zero)
            if cfg.algo.dynamic_sampling:
                dropped += int(zero.sum())
                rollout, rewards, per_term, details = _keep_groups(
                    rollout, rewards, per_term, details, ~zero
                )
            kept.append((rollout, rewards, per_term, details))
            have = sum(len(r.prompts) for r, *_ in kept)
            if not cfg.algo.dynamic_sampling or self._all_ranks_min(have) >= quota:
                break
        rollout, rewards, per_term, details = _concat(
            kept, limit=min(quota, self._all_ranks_min(sum(len(r.prompts) for r, *_ in kept)))
        )
        if not rollout.prompts:
            raise RuntimeError(
                "dynamic sampling kept no group with reward variance; raise "
                "algo.max_resample_rounds or check the rewards"
            )
        advantages = self.advantage_fn(rewards, rollout.group_size)
        batch = StepBatch(
            rollout,
            rewards,
            per_term,
            advantages,
            details,
            zero_variance_fraction=float(
                zero_variance_groups(rewards, rollout.group_size).float().mean()
            )
            if not cfg.algo.dynamic_sampling
            else dropped / max(total_groups, 1),
        )
        with torch.no_grad():
            if cfg.algo.num_iterations > 1:
                batch.old_logps = self._logps_in_chunks(self.model, rollout)
            if cfg.algo.beta > 0:
                batch.ref_logps = self._reference_logps(rollout)
        batch.rollout_seconds = time.perf_counter() - started
        return batch

    def rollout(self, global_prompts: int) -> Rollout:
        cfg = self.config.rollout
        prompts: list[PreparedPrompt] = []
        seeds: list[int] = []
        self.too_long = 0
        for position, index in self.sampler.take(global_prompts):
            prompt = prepare_prompt(self.adapter, self.processor, self.samples[index])
            if cfg.max_prompt_length and prompt.length > cfg.max_prompt_length:
                self.too_long += 1
                continue
            prompts.append(prompt)
            seeds.append(self.sampler.generation_seed(position))
        params = SamplingParams(
            cfg.num_generations, cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k
        )
        with gathered_for_generation(self.accelerator, self.model) as model:
            return self.rollout_backend.generate(model, prompts, seeds, params)

    def update(self, batch: StepBatch) -> dict[str, Any]:
        """One optimiser step over the batch, in micro-batches with gradient accumulation."""
        cfg = self.config
        rollout = batch.rollout
        n = len(rollout.texts)
        mask = rollout.completion_mask.float()
        if cfg.algo.mask_truncated:
            mask = mask * (~rollout.truncated).float().unsqueeze(-1)
        settings = LossSettings(
            beta=cfg.algo.beta,
            epsilon_low=cfg.algo.epsilon_low,
            epsilon_high=cfg.algo.epsilon_high,
            kl_clamp=cfg.algo.kl_clamp,
            max_completion_length=cfg.rollout.max_completion_length,
            # DDP averages gradients over processes, so each process normalises by its own
            # sequence count and by the mean token count: the average is the global mean.
            num_sequences=n,
            num_tokens=float(
                self.accelerator.reduce(mask.sum().to(self.accelerator.device), "mean")
            ),
        )
        chunks = list(range(0, n, cfg.optim.micro_batch_size))
        collected: dict[str, list[torch.Tensor]] = {}
        loss_total = torch.zeros(())
        finite = True
        for k, start in enumerate(chunks):
            rows = slice(start, start + cfg.optim.micro_batch_size)
            sync = k == len(chunks) - 1
            with nullcontext() if sync else self.accelerator.no_sync(self.model):
                logps = completion_logprobs(
                    self.model,
                    [rollout.prompt_of(i) for i in range(n)[rows]],
                    rollout.completion_ids[rows],
                    rollout.completion_mask[rows],
                    self.pad_token_id,
                    cfg.rollout.temperature,
                )
                device = logps.device
                inputs = LossInputs(
                    logps=logps,
                    old_logps=(
                        batch.old_logps[rows].to(device)
                        if batch.old_logps is not None
                        else logps.detach()
                    ),
                    advantages=batch.advantages[rows].to(device),
                    mask=mask[rows].to(device),
                    ref_logps=batch.ref_logps[rows].to(device)
                    if batch.ref_logps is not None
                    else None,
                )
                loss, metrics = self.loss_fn(inputs, settings)
                finite &= bool(torch.isfinite(loss))
                self.accelerator.backward(loss)
            loss_total += loss.detach().cpu()
            for key, value in metrics.items():
                collected.setdefault(key, []).append(value.detach().cpu())
        grad_norm = self._clip()
        finite = finite and math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            self.scheduler.step()
        else:
            self.skipped_steps += 1
            logger.warning(
                "step %d: non-finite loss or gradient; update skipped (%d so far)",
                self.step + 1,
                self.skipped_steps,
            )
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {k: torch.stack(v).mean() for k, v in collected.items()}
        metrics.update(
            loss=loss_total,
            grad_norm=grad_norm,
            skipped_steps=self.skipped_steps,
            learning_rate=self.scheduler.get_last_lr()[0],
        )
        return metrics

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.config.optim.max_grad_norm or float("inf")
        norm = self.accelerator.clip_grad_norm_(params, max_norm)
        return float(norm)

    def _logps_in_chunks(self, model: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
        n, size = len(rollout.texts), self.config.optim.micro_batch_size
        parts = []
        for start in range(0, n, size):
            rows = range(n)[start : start + size]
            parts.append(
                completion_logprobs(
                    model,
                    [rollout.prompt_of(i) for i in rows],
                    rollout.completion_ids[start : start + size],
                    rollout.completion_mask[start : start + size],
                    self.pad_token_id,
                    self.config.rollout.temperature,
                ).cpu()
            )
        return torch.cat(parts)

    def _reference_logps(self, rollout: Rollout) -> torch.Tensor:
        if self.ref_model is not None:
            return self._logps_in_chunks(self.ref_model, rollout)
        with self.accelerator.unwrap_model(self.model).disable_adapter():
            return self._logps_in_chunks(self.model, rollout)

    def _all_ranks_min(self, value: int) -> int:
        """The smallest value over processes (so every rank trains on as many groups)."""
        if self.accelerator.num_processes == 1:
            return value
        tensor = torch.tensor([value], device=self.accelerator.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN)
        return int(tensor.item())

    # --------------------------------------------------------------------------- logging
    def _log(self, batch: StepBatch, update_metrics: dict[str, Any]) -> dict[str, float]:
        rollout = batch.rollout
        lengths = rollout.lengths.float()
        metrics: dict[str, Any] = {
            "reward": batch.rewards.mean(),
            "reward_std": batch.rewards.std() if len(batch.rewards) > 1 else 0.0,
            "advantage_abs": batch.advantages.abs().mean(),
            "zero_variance_groups": batch.zero_variance_fraction,
            "completion_length": lengths.mean(),
            "completion_length_max": lengths.max(),
            "truncated_fraction": rollout.truncated.float().mean(),
            "format_pass": torch.tensor([float(is_strict_format(t)) for t in rollout.texts]).mean(),
            "tokens_per_second": lengths.sum() / max(update_metrics.get("step_seconds", 1.0), 1e-9),
            "prompts_too_long": float(getattr(self, "too_long", 0)),
            **{f"reward/{k}": v.mean() for k, v in batch.per_term.items()},
            **update_metrics,
        }
        metrics = {k: self._reduce_over_ranks(v, "mean") for k, v in metrics.items()}
        if (
            self.step % self.config.logging.log_steps == 0
            or self.step == self.config.optim.max_steps
        ):
            return self.metrics.log(metrics, self.step)
        return {k: float(v) for k, v in metrics.items()}

    def _reduce_over_ranks(self, value: Any, how: str) -> torch.Tensor:
        tensor = torch.as_tensor(value, dtype=torch.float32).detach().reshape(())
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.accelerator.device), how).cpu()

    def _log_rollouts(self, batch: StepBatch) -> None:
        every = self.config.logging.rollout_log_steps
        if not every or self.step % every and self.step != self.config.optim.max_steps:
            return
        folder = self.output_dir / "rollouts"
        folder.mkdir(exist_ok=True)
        rank = self.accelerator.process_index
        path = folder / f"step_{self.step:06d}_rank{rank}.jsonl"
        rollout = batch.rollout
        with open(path, "w") as handle:
            for i, text in enumerate(rollout.texts):
                prompt = rollout.prompt_of(i)
                row = {
                    "step": self.step,
                    "rank": rank,
                    "group": i // rollout.group_size,
                    "sample_id": prompt.sample.id,
                    "question": prompt.sample.question,
                    "images": list(prompt.sample.images),
                    "task": prompt.sample.task,
                    "solution": prompt.sample.answer_text(),
                    "completion": text,
                    "reward": float(batch.rewards[i]),
                    "advantage": float(batch.advantages[i]),
                    "rewards": {k: float(v[i]) for k, v in batch.per_term.items()},
                    "details": batch.details[i],
                    "box_space": _space_json(prompt.box_space),
                }
                handle.write(json.dumps(row, default=str) + "\n")

    # ----------------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        acc = self.accelerator
        acc.wait_for_everyone()
        stage = ckpt.staging_dir(self.output_dir, self.step)
        if acc.is_main_process:
            ckpt.begin(self.output_dir, self.step)
            self._save_model(stage / "model")
        acc.wait_for_everyone()
        ckpt.write_rank_state(stage, acc.process_index)
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            state = {
                "step": self.step,
                "sampler": self.sampler.state_dict(),
                "skipped_steps": self.skipped_steps,
                "world_size": acc.num_processes,
                "lora": self.config.model.lora.enabled,
            }
            ckpt.write_training_state(stage, self.optimizer, self.scheduler, state)
            path = ckpt.commit(self.output_dir, self.step, self.config.checkpoint.keep_last)
            if self.step == self.config.optim.max_steps:
                self._save_final(self.output_dir / "final")
        acc.wait_for_everyone()
        if os.environ.get(FAULT_ENV) == str(self.step):
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    def _save_model(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(folder, state_dict=self.accelerator.get_state_dict(self.model))
        self.processor.save_pretrained(folder)
        if self.config.model.lora.enabled and self.config.model.lora.save_merged:
            self._save_merged(folder / "merged")

    def _save_merged(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(folder)
        self.processor.save_pretrained(folder)

    def _save_final(self, folder: Path) -> None:
        """A plain checkpoint that ``AutoModelForImageTextToText.from_pretrained`` loads (LoRA merged)."""
        tmp = folder.with_name(folder.name + ".tmp")
        if self.config.model.lora.enabled:
            self._save_merged(tmp)
        else:
            self._save_model(tmp)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def _resume(self) -> None:
        setting = self.config.checkpoint.resume
        if setting == "none":
            return
        path = ckpt.latest_checkpoint(self.output_dir) if setting == "auto" else Path(setting)
        if path is None:
            return
        if not (path / ckpt.STATE_FILE).is_file():
            raise FileNotFoundError(
                f"checkpoint.resume={setting!r}: {path} is not a complete checkpoint"
            )
        state = ckpt.read_state(path)
        self._load_weights(path / "model")
        ckpt.load_training_state(
            path, self.optimizer, self.scheduler, self.accelerator.process_index
        )
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.sampler.load_state_dict(state["sampler"])
        if self.accelerator.is_main_process:
            logger.warning("resumed from %s at step %d", path, self.step)

    def _load_weights(self, folder: Path) -> None:
        """Restore trained weights. Full weights go through ``from_pretrained`` (which maps the
        on-disk key names, e.g. Qwen's ``visual.*``, to the module tree) and are copied in."""
        from safetensors.torch import load_file

        model = self.accelerator.unwrap_model(self.model)
        if self.config.model.lora.enabled:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
            return
        from transformers import AutoModelForImageTextToText

        saved = AutoModelForImageTextToText.from_pretrained(
            folder, dtype=next(model.parameters()).dtype
        )
        model.load_state_dict(saved.state_dict(), strict=True)
        del saved

    def cleanup(self) -> None:
        if self.accelerator.num_processes > 1:
            digest = _parameter_digest(self.accelerator.unwrap_model(self.model))
            (self.output_dir / f"param_digest_rank{self.accelerator.process_index}.txt").write_text(
                digest
            )
        self.accelerator.end_training()


# ------------------------------------------------------------------------------- helpers
@contextmanager
def gathered_for_generation(accelerator: Any, model: torch.nn.Module):
    """The unwrapped model with full weights for ``generate``.

    Under DeepSpeed ZeRO-3 parameters are sharded across ranks; they are gathered for the
    duration of generation (as TRL does), so each rank can generate on its own schedule.
    Elsewhere this is just ``unwrap_model``.
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    unwrapped = accelerator.unwrap_model(model)
    if plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            yield unwrapped
    else:
        yield unwrapped


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


def _space_json(space: Any) -> dict[str, Any] | None:
    if space is None:
        return None
    return {
        "system": space.system,
        "original_size": list(space.original_size),
        "model_size": list(space.model_size) if space.model_size else None,
    }


def _parameter_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(param.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def _keep_groups(
    rollout: Rollout,
    rewards: torch.Tensor,
    per_term: dict[str, torch.Tensor],
    details: list[dict],
    keep: torch.Tensor,
):
    g = rollout.group_size
    rows = torch.arange(len(rollout.texts)).view(-1, g)[keep].reshape(-1)
    kept = Rollout(
        [p for p, k in zip(rollout.prompts, keep.tolist(), strict=True) if k],
        g,
        rollout.completion_ids[rows],
        rollout.completion_mask[rows],
        [rollout.texts[i] for i in rows.tolist()],
        rollout.truncated[rows],
    )
    return (
        kept,
        rewards[rows],
        {k: v[rows] for k, v in per_term.items()},
        [details[i] for i in rows.tolist()],
    )


def _concat(parts, limit: int):
    """Join rollouts from several sampling rounds, keeping at most ``limit`` groups."""
    prompts, ids, masks, texts, truncated, rewards, details = [], [], [], [], [], [], []
    per_term: dict[str, list[torch.Tensor]] = {}
    width = max((r.completion_ids.shape[1] for r, *_ in parts), default=0)
    group = parts[0][0].group_size
    for rollout, reward, terms, det in parts:
        pad = width - rollout.completion_ids.shape[1]
        prompts += rollout.prompts
        ids.append(torch.nn.functional.pad(rollout.completion_ids, (0, pad)))
        masks.append(torch.nn.functional.pad(rollout.completion_mask, (0, pad)))
        texts += rollout.texts
        truncated.append(rollout.truncated)
        rewards.append(reward)
        details += det
        for k, v in terms.items():
            per_term.setdefault(k, []).append(v)
    n = limit * group
    rollout = Rollout(
        prompts[:limit],
        group,
        torch.cat(ids)[:n],
        torch.cat(masks)[:n],
        texts[:n],
        torch.cat(truncated)[:n],
    )
    return (
        rollout,
        torch.cat(rewards)[:n],
        {k: torch.cat(v)[:n] for k, v in per_term.items()},
        details[:n],
    )


class _progress:
    """A rich progress bar showing reward, KL and completion length (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total, start

    def __enter__(self):
        if not self.enabled:
            return lambda metrics: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("GRPO"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.total, completed=self.start, info="")

        def update(metrics: dict[str, float]) -> None:
            info = (
                f"reward {metrics.get('reward', float('nan')):.3f}  kl {metrics.get('kl', 0.0):.4f}  "
                f"len {metrics.get('completion_length', float('nan')):.0f}"
            )
            self.progress.update(self.task, advance=1, info=info)

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)
        return False


def run_training(config: TrainConfig) -> dict[str, float]:
    """Set up, train, clean up: what ``vlm-r1 train`` calls."""
    trainer = GRPOTrainer(config)
    trainer.setup()
    try:
        return trainer.train()
    finally:
        trainer.cleanup()
