"""The GRPO loop for vision-language models: rollout -> reward -> advantage -> update.

Thin orchestration over pure pieces (``advantages``, ``losses``, ``logprobs``) and helpers
(``sampling``, ``rollout``, ``scoring``, ``monitors``); the accelerator, model, optimiser and
checkpoints live in the shared ``Engine``. ``train()`` reads in the paper's order; everything
distributed goes through accelerate (CPU, DDP, FSDP, DeepSpeed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.config import TrainConfig, to_dict
from vlm_r1.data.jsonl import DataError, read_samples
from vlm_r1.engine import (
    Engine,
    EngineConfig,
    Progress,
    StopSignal,
    launched_as_main_process,
)
from vlm_r1.rewards.registry import declared_methods
from vlm_r1.rl.advantages import ADVANTAGES, step_advantages, zero_variance_groups
from vlm_r1.rl.image_features import SharedImageFeatures, has_images
from vlm_r1.rl.logprobs import completion_logprobs, shared_prefix_logprobs
from vlm_r1.rl.losses import LOSSES, LossInputs, LossSettings
from vlm_r1.rl.monitors import rollout_monitors
from vlm_r1.rl.prompts import PreparedPrompt, prepare_prompt
from vlm_r1.rl.rollout import HFRollout, Rollout, RolloutBackend, SamplingParams
from vlm_r1.rl.sampling import PromptSampler
from vlm_r1.rl.scoring import build_rewards, score
from vlm_r1.rl.vllm_rollout import VLLMRollout, require_vllm

logger = logging.getLogger(__name__)


@dataclass
class StepBatch:
    """One rollout batch, scored, ready for ``num_iterations`` policy updates."""

    rollout: Rollout
    rewards: torch.Tensor  # [N]
    per_term: dict[str, torch.Tensor]  # {reward label: [N]}
    advantages: torch.Tensor  # [N]
    details: list[dict]
    old_logps: torch.Tensor | None = None  # [N, T], for num_iterations > 1
    ref_logps: torch.Tensor | None = None  # [N, T], for beta > 0
    image_features: SharedImageFeatures | None = None  # frozen vision tower: reused by updates
    zero_variance_fraction: float = 0.0
    prompts_too_long: int = 0
    rollout_seconds: float = 0.0


def load_training_samples(data: Any, is_main: bool, rewards: Sequence[Any] = ()) -> list:
    """Read ``data`` (a ``DataConfig``) under its limits; rows may name only registered rewards
    or the custom rewards / judge that ``rewards`` (the config's reward terms) declare."""
    reader = read_samples(
        data.train,
        data.image_folders,
        reward_methods=data.reward_methods,
        on_error=data.on_error,
        check_images=data.check_images,
        allowed_methods=declared_methods(rewards),
        max_image_pixels=data.max_image_pixels,
        max_text_chars=data.max_text_chars,
    )
    samples = []
    for sample in reader:
        samples.append(sample)
        if data.max_samples and len(samples) >= data.max_samples:
            break
    if is_main:
        logger.info("%s", reader.stats.summary())
    if not samples:
        raise DataError(
            str(data.train),
            "<file>",
            f"no usable samples ({reader.stats.summary()})",
            None,
            "empty",
        )
    return samples


class GRPOTrainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.step = 0
        self.skipped_steps = 0

    def setup(self) -> None:
        cfg = self.config
        if cfg.rollout.backend == "vllm":
            require_vllm()  # fail now, with the install hint, not after loading everything
        # Data before the model: a bad row (or one naming code to run) fails in seconds.
        self.samples = load_training_samples(cfg.data, launched_as_main_process(), cfg.rewards)
        self.engine = Engine(
            EngineConfig(
                cfg.model,
                cfg.optim,
                cfg.checkpoint,
                cfg.logging,
                cfg.seed,
                to_dict(cfg),
                keep_reference=cfg.algo.beta > 0,
            )
        )
        acc = self.engine.accelerator
        self.sampler = PromptSampler(
            len(self.samples), cfg.seed, cfg.data.shuffle, acc.process_index, acc.num_processes
        )
        self.rollout_backend = self._rollout_backend()
        self.share_features, self.vision_trains = self._feature_sharing()
        self.share_prefix = self._prefix_sharing()
        self.rewards = build_rewards(cfg.rewards)
        self.loss_fn = LOSSES[cfg.algo.loss_type]
        self.advantage_fn = ADVANTAGES[cfg.algo.scale_rewards]
        state = self.engine.resume()
        if state is not None:
            self.step = int(state["step"])
            self.skipped_steps = int(state.get("skipped_steps", 0))
            self.sampler.load_state_dict(state["sampler"])

    def _rollout_backend(self) -> RolloutBackend:
        tokenizer = self.engine.processor.tokenizer
        eos_ids = self.engine.adapter.stop_token_ids(tokenizer)
        if self.config.rollout.backend == "vllm":
            return VLLMRollout(
                self.config.model.path,
                self.engine.adapter,
                self.engine.processor,
                eos_ids,
                self.engine.pad_token_id,
                self.engine.adapter.forbidden_token_ids(tokenizer),
                gpu_memory_utilization=self.config.rollout.vllm_gpu_memory_utilization,
                max_model_len=self.config.rollout.vllm_max_model_len,
                seed=self.config.seed,
            )
        return HFRollout(
            self.engine.processor,
            eos_ids,
            self.engine.pad_token_id,
            self.engine.adapter.forbidden_token_ids(tokenizer),
            shared_prefill=self.config.speed.shared_prefill,
        )

    def _feature_sharing(self) -> tuple[bool, bool]:
        """Whether training forwards share image features, and whether the vision tower trains.

        A training vision tower under multi-process DDP gets its gradients all-reduced only
        for parameters used inside the wrapped forward; encoding outside it would leave them
        unsynchronised, so that case keeps the repeated-image path (and says so).
        """
        engine = self.engine
        trains = any(
            p.requires_grad for _, p in engine.adapter.vision_parameters(engine.unwrapped())
        )
        share = self.config.speed.share_image_features
        if share and trains and engine.accelerator.num_processes > 1:
            logger.info(
                "speed.share_image_features: the vision tower trains on %d processes, so images "
                "are encoded per completion; freeze it (model.freeze_vision=true) to share them",
                engine.accelerator.num_processes,
            )
            share = False
        return share, trains

    def _prefix_sharing(self) -> bool:
        """Whether training forwards run each prompt once per micro-batch (a cached prefix).

        That takes two forward calls per micro-batch, which DDP/FSDP/DeepSpeed wrappers do not
        allow before one backward; multi-process runs keep one forward over whole sequences.
        """
        share = self.config.speed.share_prompt_prefix
        if share and self.engine.accelerator.num_processes > 1:
            logger.info(
                "speed.share_prompt_prefix applies to single-process runs; with %d processes "
                "each completion's forward includes its prompt",
                self.engine.accelerator.num_processes,
            )
            share = False
        if share and self.config.model.gradient_checkpointing:
            # Checkpointed layers do not return a KV cache in training mode.
            logger.info("speed.share_prompt_prefix is off with model.gradient_checkpointing")
            share = False
        return share

    # ------------------------------------------------------------------------------ loop
    def train(self) -> dict[str, float]:
        cfg = self.config
        last: dict[str, float] = {}
        show = cfg.logging.progress and self.engine.accelerator.is_main_process
        with (
            StopSignal() as stop,
            Progress(
                show, cfg.optim.max_steps, self.step, "GRPO", ("reward", "kl", "completion_length")
            ) as bar,
        ):
            while self.step < cfg.optim.max_steps and not stop.requested:
                batch = self.collect()
                first_step = self.step
                for iteration in range(cfg.algo.num_iterations):
                    if self.step >= cfg.optim.max_steps:
                        break
                    started = time.perf_counter()
                    metrics = self.update(batch)
                    self.step += 1
                    # The rollout is paid once per batch: it counts in the batch's first step.
                    rollout_share = batch.rollout_seconds if iteration == 0 else 0.0
                    metrics["step_seconds"] = time.perf_counter() - started + rollout_share
                    last = self._log(batch, metrics)
                    bar.update(last)
                self._log_rollouts(batch)
                # Checkpoints fall on rollout-batch boundaries: with num_iterations > 1 no
                # half-used batch is lost, so resume is exact.
                every = cfg.checkpoint.save_steps
                if (
                    self.step // every > first_step // every
                    or self.step == cfg.optim.max_steps
                    or stop.requested
                ):
                    self.save()
        if self.step < cfg.optim.max_steps:
            stop.raise_if_requested(self.step)  # checkpoint saved above; exit 128 + signal
        return last

    def collect(self) -> StepBatch:
        """Rollout -> reward -> advantage (with DAPO dynamic sampling when enabled)."""
        cfg = self.config
        started = time.perf_counter()
        quota = cfg.optim.prompts_per_step // self.engine.accelerator.num_processes
        rounds = 1 + (cfg.algo.max_resample_rounds if cfg.algo.dynamic_sampling else 0)
        kept, total_groups, dropped, too_long = [], 0, 0, 0
        for _ in range(rounds):
            rollout, skipped = self.rollout(cfg.optim.prompts_per_step)
            too_long += skipped
            rewards, per_term, details = score(self.rewards, rollout)
            zero = zero_variance_groups(rewards, rollout.group_size)
            total_groups += len(zero)
            if cfg.algo.dynamic_sampling:
                dropped += int(zero.sum())
                rollout, rewards, per_term, details = _keep_groups(
                    rollout, rewards, per_term, details, ~zero
                )
            kept.append((rollout, rewards, per_term, details))
            have = self.engine.all_ranks_min(sum(len(r.prompts) for r, *_ in kept))
            if not cfg.algo.dynamic_sampling or have >= quota:
                break
        # Every process keeps the same number of groups so DDP steps stay in lockstep.
        rollout, rewards, per_term, details = _concat(kept, limit=min(quota, have))
        if not rollout.prompts:
            raise RuntimeError(
                "no prompt left to train on this step: dynamic sampling found no group with "
                "reward variance (raise algo.max_resample_rounds) or every prompt exceeded "
                "rollout.max_prompt_length"
            )
        zero_fraction = (
            dropped / max(total_groups, 1)
            if cfg.algo.dynamic_sampling
            else float(zero_variance_groups(rewards, rollout.group_size).float().mean())
        )
        batch = StepBatch(
            rollout,
            rewards,
            per_term,
            # Batch statistics over every process's rewards (scale_rewards: batch).
            step_advantages(
                self.advantage_fn, rewards, rollout.group_size, self.engine.accelerator
            ),
            details,
            zero_variance_fraction=zero_fraction,
            prompts_too_long=too_long,
        )
        with torch.no_grad():
            # The policy's features, if anything reads them: the updates and the reference
            # (frozen tower), or the old-policy log-probs (mu > 1).
            needed = not self.vision_trains or cfg.algo.num_iterations > 1
            features = self._encode(self.engine.model, rollout) if needed else None
            if not self.vision_trains:
                batch.image_features = features  # the same for every forward of this batch
            if cfg.algo.num_iterations > 1:
                batch.old_logps = self._logps_in_chunks(self.engine.model, rollout, features)
            if cfg.algo.beta > 0:
                with self.engine.reference() as ref:
                    # A frozen tower is the reference's tower too (LoRA never adapts it).
                    ref_features = self._encode(ref, rollout) if self.vision_trains else features
                    batch.ref_logps = self._logps_in_chunks(ref, rollout, ref_features)
        batch.rollout_seconds = time.perf_counter() - started
        return batch

    def rollout(self, global_prompts: int) -> tuple[Rollout, int]:
        """This process's share of ``global_prompts`` prompts, G completions each; and how
        many prompts were skipped for exceeding ``max_prompt_length``."""
        cfg = self.config.rollout
        prompts: list[PreparedPrompt] = []
        seeds: list[int] = []
        too_long = 0
        for position, index in self.sampler.take(global_prompts):
            prompt = prepare_prompt(
                self.engine.adapter,
                self.engine.processor,
                self.samples[index],
                self.config.data.max_image_pixels,
            )
            if cfg.max_prompt_length and prompt.length > cfg.max_prompt_length:
                too_long += 1
                continue
            prompts.append(prompt)
            seeds.append(self.sampler.generation_seed(position))
        params = SamplingParams(
            cfg.num_generations, cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k
        )
        with self.engine.for_generation() as model:
            return self.rollout_backend.generate(model, prompts, seeds, params), too_long

    def update(self, batch: StepBatch) -> dict[str, Any]:
        """One optimiser step over the batch, in micro-batches with gradient accumulation."""
        cfg, engine = self.config, self.engine
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
            kl_bias_correction=cfg.algo.kl_bias_correction,
            max_completion_length=cfg.rollout.max_completion_length,
            # DDP averages gradients over processes, so each process normalises by its own
            # sequence count and by the mean token count: the average is the global mean.
            num_sequences=n,
            num_tokens=float(engine.mean_over_ranks(mask.sum())),
        )
        starts = list(range(0, n, cfg.optim.micro_batch_size))
        features = batch.image_features
        if self.vision_trains:
            # Encoded once with autograd on; micro-batches read detached leaves, and the tower's
            # backward runs once, after the last micro-batch (see rl.image_features).
            encoded = self._encode(engine.model, rollout)
            features = encoded.trainable() if encoded is not None else None
        collected: dict[str, list[torch.Tensor]] = {}
        loss_total = torch.zeros(())
        for k, start in enumerate(starts):
            rows = slice(start, start + cfg.optim.micro_batch_size)
            last_chunk = k == len(starts) - 1  # gradients are all-reduced once, on the last chunk
            with nullcontext() if last_chunk else engine.accelerator.no_sync(engine.model):
                logps = self._logps(engine.model, rollout, range(n)[rows], features)
                device = logps.device
                inputs = LossInputs(
                    logps=logps,
                    old_logps=batch.old_logps[rows].to(device)
                    if batch.old_logps is not None
                    else logps.detach(),
                    advantages=batch.advantages[rows].to(device),
                    mask=mask[rows].to(device),
                    ref_logps=batch.ref_logps[rows].to(device)
                    if batch.ref_logps is not None
                    else None,
                )
                loss, metrics = self.loss_fn(inputs, settings)
                engine.accelerator.backward(loss)
            loss_total += loss.detach().cpu()
            for key, value in metrics.items():
                collected.setdefault(key, []).append(value.detach().cpu())
        if self.vision_trains and features is not None:
            features.backward()
        # A non-finite loss makes the (all-reduced) gradient non-finite: every process skips.
        grad_norm, stepped = engine.optimizer_step()
        if not stepped:
            self.skipped_steps += 1
            logger.warning(
                "step %d: non-finite loss or gradient; update skipped (%d so far)",
                self.step + 1,
                self.skipped_steps,
            )
        metrics = {k: torch.stack(v).mean() for k, v in collected.items()}
        metrics.update(
            loss=loss_total,
            grad_norm=grad_norm,
            skipped_steps=self.skipped_steps,
            learning_rate=engine.scheduler.get_last_lr()[0],
        )
        return metrics

    def _encode(self, model: torch.nn.Module, rollout: Rollout) -> SharedImageFeatures | None:
        """The rollout's unique prompts through ``model``'s vision encoder (None: not sharing)."""
        if not self.share_features or not has_images(rollout.prompts):
            return None
        return SharedImageFeatures.encode(
            self.engine.accelerator.unwrap_model(model), rollout.prompts
        )

    def _logps_in_chunks(
        self, model: torch.nn.Module, rollout: Rollout, features: SharedImageFeatures | None
    ) -> torch.Tensor:
        n, size = len(rollout.texts), self.config.optim.micro_batch_size
        return torch.cat(
            [
                self._logps(model, rollout, range(n)[s : s + size], features).cpu()
                for s in range(0, n, size)
            ]
        )

    def _logps(
        self,
        model: torch.nn.Module,
        rollout: Rollout,
        rows: range,
        features: SharedImageFeatures | None,
    ) -> torch.Tensor:
        """Per-token log-probs of ``rows`` of the rollout under ``model`` (the shared paths
        when enabled: they give the same numbers, see tests/unit/rl/test_image_features.py)."""
        args = (
            rollout.completion_ids[rows.start : rows.stop],
            rollout.completion_mask[rows.start : rows.stop],
            self.engine.pad_token_id,
            self.config.rollout.temperature,
        )
        groups = [row // rollout.group_size for row in rows]
        if self.share_prefix:
            unique = sorted(set(groups))
            return shared_prefix_logprobs(
                model,
                [rollout.prompts[u] for u in unique],
                [unique.index(g) for g in groups],
                *args,
                image_features=features.for_rows(unique) if features is not None else None,
            )
        return completion_logprobs(
            model,
            [rollout.prompts[g] for g in groups],
            *args,
            image_features=features.for_rows(groups) if features is not None else None,
        )

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
            "tokens_per_second": lengths.sum() / max(update_metrics.get("step_seconds", 1.0), 1e-9),
            "prompts_too_long": batch.prompts_too_long,
            **{f"reward/{k}": v.mean() for k, v in batch.per_term.items()},
            **rollout_monitors(rollout),
            **update_metrics,
        }
        metrics = self.engine.metrics_mean_over_ranks(metrics)
        if (
            self.step % self.config.logging.log_steps == 0
            or self.step == self.config.optim.max_steps
        ):
            return self.engine.metrics.log(metrics, self.step)
        return {k: float(v) for k, v in metrics.items()}

    def _log_rollouts(self, batch: StepBatch) -> None:
        every = self.config.logging.rollout_log_steps
        if not every or (self.step % every and self.step != self.config.optim.max_steps):
            return
        folder = self.engine.output_dir / "rollouts"
        folder.mkdir(exist_ok=True)
        rank = self.engine.accelerator.process_index
        rollout = batch.rollout
        with open(folder / f"step_{self.step:06d}_rank{rank}.jsonl", "w") as handle:
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

    def save(self) -> None:
        state = {"sampler": self.sampler.state_dict(), "skipped_steps": self.skipped_steps}
        self.engine.save(self.step, state, final=self.step == self.config.optim.max_steps)

    def cleanup(self) -> None:
        self.engine.cleanup()


# ------------------------------------------------------------------------------- helpers
def _space_json(space: Any) -> dict[str, Any] | None:
    if space is None:
        return None
    return {
        "system": space.system,
        "original_size": list(space.original_size),
        "model_size": list(space.model_size) if space.model_size else None,
    }


def _keep_groups(
    rollout: Rollout,
    rewards: torch.Tensor,
    per_term: dict[str, torch.Tensor],
    details: list[dict],
    keep: torch.Tensor,
):
    """The rows of the groups flagged in ``keep`` ``[B]``."""
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


def _concat(parts: list, limit: int):
    """Join rollouts from several sampling rounds, keeping at most ``limit`` groups."""
    group = parts[0][0].group_size
    width = max(r.completion_ids.shape[1] for r, *_ in parts)
    pad = [width - r.completion_ids.shape[1] for r, *_ in parts]
    n = limit * group
    rollout = Rollout(
        [p for r, *_ in parts for p in r.prompts][:limit],
        group,
        torch.cat(
            [
                torch.nn.functional.pad(r.completion_ids, (0, w))
                for (r, *_), w in zip(parts, pad, strict=True)
            ]
        )[:n],
        torch.cat(
            [
                torch.nn.functional.pad(r.completion_mask, (0, w))
                for (r, *_), w in zip(parts, pad, strict=True)
            ]
        )[:n],
        [t for r, *_ in parts for t in r.texts][:n],
        torch.cat([r.truncated for r, *_ in parts])[:n],
    )
    rewards = torch.cat([rw for _, rw, *_ in parts])[:n]
    per_term = {k: torch.cat([terms[k] for _, _, terms, _ in parts])[:n] for k in parts[0][2]}
    details = [d for *_, det in parts for d in det][:n]
    return rollout, rewards, per_term, details


def run_training(config: TrainConfig) -> dict[str, float]:
    """Set up, train, clean up: what ``vlm-r1 train`` calls."""
    trainer = GRPOTrainer(config)
    trainer.setup()
    try:
        return trainer.train()
    finally:
        trainer.cleanup()
