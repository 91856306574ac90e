"""The GRPO loop for vision-language models: rollout -> reward -> advantage -> update.

Thin orchestration over pure pieces (``advantages``, ``losses``, ``policy.logprobs``) and
helpers (``policy.sampling``, ``rollout``, ``scoring``, ``monitors``); the accelerator, model,
optimiser and checkpoints live in the shared ``Engine``. ``train()`` reads in the paper's order;
everything distributed goes through accelerate (CPU, DDP, FSDP, DeepSpeed).

One step's data flow::

    sampler.take -> prepare_prompt -> backend.generate          Rollout       (rollout)
    score(rewards, rollout)                                     ScoredRollout (reward)
    [dynamic sampling: select_groups(~zero variance), cat]      ScoredRollout (filter)
    step_advantages(rewards)                                    StepBatch     (advantage)
    old / reference log-probs (no grad)                         StepBatch
    num_iterations x update(): micro-batches -> loss -> backward -> optimizer_step
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.config import TrainConfig, to_dict
from vlm_r1.data.loading import load_training_samples
from vlm_r1.engine import (
    Engine,
    EngineConfig,
    Progress,
    StopSignal,
    launched_as_main_process,
)
from vlm_r1.eval.during_training import Validation, validate_if_due
from vlm_r1.policy.image_features import SharedImageFeatures, has_images
from vlm_r1.policy.logprobs import TokenScores, group_logprobs
from vlm_r1.policy.prompts import PreparedPrompt, prepare_prompt
from vlm_r1.policy.sampling import PromptSampler
from vlm_r1.policy.sharing import sharing_plan
from vlm_r1.rl.advantages import ADVANTAGES, step_advantages, zero_variance_groups
from vlm_r1.rl.losses import LOSSES, LossInputs, LossSettings, high_entropy_mask
from vlm_r1.rl.monitors import rollout_monitors
from vlm_r1.rl.rollout import HFRollout, Rollout, RolloutBackend, SamplingParams
from vlm_r1.rl.rollout_log import write_rollouts
from vlm_r1.rl.scoring import ScoredRollout, build_rewards, score
from vlm_r1.rl.vllm_rollout import VLLMRollout, require_vllm

logger = logging.getLogger(__name__)


@dataclass
class StepBatch:
    """One scored rollout batch and what every one of its ``num_iterations`` updates reads."""

    scored: ScoredRollout
    advantages: torch.Tensor  # [N]
    old_logps: torch.Tensor | None = None  # [N, T], for num_iterations > 1
    ref_logps: torch.Tensor | None = None  # [N, T], for beta > 0
    image_features: SharedImageFeatures | None = None  # frozen vision tower: reused by updates

    @property
    def rollout(self) -> Rollout:
        return self.scored.rollout


@dataclass
class CollectStats:
    """How collecting a batch went (logged with the step, not part of the batch)."""

    zero_variance_fraction: float = 0.0
    prompts_too_long: int = 0
    seconds: float = 0.0


class GRPOTrainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.step = 0
        self.skipped_steps = 0

    def setup(self) -> None:
        cfg = self.config
        if cfg.rollout.backend == "vllm":
            require_vllm()  # fail now, with the install hint, not after loading everything
        # Rewards and data before the model: a wrong name or a bad row fails in seconds.
        self.rewards = build_rewards(cfg.rewards)
        self.samples = load_training_samples(cfg.data, launched_as_main_process(), cfg.rewards)
        self.validation = Validation.start(cfg.eval, cfg.prompt)  # held-out data, checked now
        self.engine = Engine(
            EngineConfig(
                cfg.model,
                cfg.optim,
                cfg.checkpoint,
                cfg.logging,
                cfg.seed,
                to_dict(cfg),
                keep_reference=cfg.algo.beta > 0,
                default_config=to_dict(TrainConfig()),
            )
        )
        acc = self.engine.accelerator
        self.sampler = PromptSampler(
            len(self.samples), cfg.seed, cfg.data.shuffle, acc.process_index, acc.num_processes
        )
        self.rollout_backend = self._rollout_backend()
        engine = self.engine
        self.vision_trains = any(
            p.requires_grad for _, p in engine.adapter.vision_parameters(engine.unwrapped())
        )
        self.sharing = sharing_plan(
            cfg.speed,
            acc.num_processes,
            self.vision_trains,
            cfg.model.gradient_checkpointing,
            shards_parameters=engine.parallel.shards_parameters,
        )
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
            prompts_per_generation=self.config.rollout.prompts_per_generation,
        )

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
                batch, stats = self.collect()
                first_step = self.step
                for iteration in range(cfg.algo.num_iterations):
                    if self.step >= cfg.optim.max_steps:
                        break
                    started = time.perf_counter()
                    metrics = self.update(batch)
                    self.step += 1
                    # The rollout is paid once per batch: it counts in the batch's first step.
                    rollout_share = stats.seconds if iteration == 0 else 0.0
                    metrics["step_seconds"] = time.perf_counter() - started + rollout_share
                    scores = validate_if_due(
                        self.validation, self.engine, self.step, cfg.optim.max_steps
                    )
                    last = self._log(batch, stats, metrics, scores)
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

    def collect(self) -> tuple[StepBatch, CollectStats]:
        """Rollout -> reward -> filter -> advantage -> old/reference log-probs."""
        cfg = self.config
        started = time.perf_counter()
        scored, stats = self.sample_groups()
        advantages = step_advantages(  # batch statistics over every process's rewards
            self.advantage_fn, scored.rewards, scored.rollout.group_size, self.engine.accelerator
        )
        batch = StepBatch(scored, advantages)
        rollout = scored.rollout
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
        stats.seconds = time.perf_counter() - started
        return batch, stats

    def sample_groups(self) -> tuple[ScoredRollout, CollectStats]:
        """This process's scored groups for one step: one sampling round, or with DAPO's
        dynamic sampling, rounds that drop zero-variance groups until the quota is full."""
        cfg = self.config
        quota = cfg.optim.prompts_per_step // self.engine.accelerator.num_processes
        rounds = 1 + (cfg.algo.max_resample_rounds if cfg.algo.dynamic_sampling else 0)
        parts: list[ScoredRollout] = []
        total_groups, dropped, too_long = 0, 0, 0
        for _ in range(rounds):
            rollout, skipped = self.rollout(cfg.optim.prompts_per_step)
            too_long += skipped
            scored = score(self.rewards, rollout)
            zero = zero_variance_groups(scored.rewards, rollout.group_size)
            total_groups += len(zero)
            if cfg.algo.dynamic_sampling:
                dropped += int(zero.sum())
                scored = scored.select_groups(~zero)
            parts.append(scored)
            have = self.engine.all_ranks_min(sum(p.num_groups for p in parts))
            if not cfg.algo.dynamic_sampling or have >= quota:
                break
        # Every process keeps the same number of groups so DDP steps stay in lockstep.
        scored = ScoredRollout.cat(parts).first_groups(min(quota, have))
        if not scored.num_groups:
            raise RuntimeError(
                "no prompt left to train on this step: dynamic sampling found no group with "
                "reward variance (raise algo.max_resample_rounds) or every prompt exceeded "
                "rollout.max_prompt_length"
            )
        zero_fraction = (
            dropped / max(total_groups, 1)
            if cfg.algo.dynamic_sampling
            else float(
                zero_variance_groups(scored.rewards, scored.rollout.group_size).float().mean()
            )
        )
        return scored, CollectStats(zero_fraction, too_long)

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
                self.config.prompt,
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
        mask, settings = self._loss_mask_and_settings(rollout)
        starts = list(range(0, n, cfg.optim.micro_batch_size))
        features = batch.image_features
        if self.vision_trains:
            # Encoded once with autograd on; micro-batches read detached leaves, and the tower's
            # backward runs once, after the last micro-batch (see policy.image_features).
            encoded = self._encode(engine.model, rollout)
            features = encoded.trainable() if encoded is not None else None
        collected: dict[str, list[torch.Tensor]] = {}
        loss_total = torch.zeros(())
        entropy_sum, entropy_tokens = torch.zeros((), dtype=torch.float64), 0.0
        for k, start in enumerate(starts):
            rows = slice(start, start + cfg.optim.micro_batch_size)
            last_chunk = k == len(starts) - 1  # the step's gradients are complete after it
            with engine.micro_batch(last_chunk):
                logps, entropy = self._logps(
                    engine.model, rollout, range(n)[rows], features, with_entropy=True
                )
                device = logps.device
                completion = rollout.completion_mask[rows].to(device, entropy.dtype)
                entropy_sum += (entropy * completion).sum().double().cpu()
                entropy_tokens += float(completion.sum())
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
                    entropy_mask=high_entropy_mask(
                        entropy, mask[rows].to(device), cfg.algo.top_entropy_quantile
                    )
                    if cfg.algo.top_entropy_quantile < 1.0
                    else None,
                )
                loss, metrics = self.loss_fn(inputs, settings)
                engine.backward(loss, last_chunk)
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
            # Mean over this step's completion tokens of the policy's per-token entropy (nats,
            # at the sampling temperature), from the update's own forward.
            entropy=entropy_sum / max(entropy_tokens, 1.0),
            loss=loss_total,
            grad_norm=grad_norm,
            optimizer_steps=engine.optimizer_steps,
            skipped_steps=self.skipped_steps,
            learning_rate=engine.scheduler.get_last_lr()[0],
        )
        return metrics

    def _loss_mask_and_settings(self, rollout: Rollout) -> tuple[torch.Tensor, LossSettings]:
        """Which completion tokens count ``[N, T]``, and the loss settings of this step."""
        algo = self.config.algo
        mask = rollout.completion_mask.float()
        if algo.mask_truncated:  # overlong filtering: truncated completions get no loss
            mask = mask * (~rollout.truncated).float().unsqueeze(-1)
        settings = LossSettings(
            beta=algo.beta,
            epsilon_low=algo.epsilon_low,
            epsilon_high=algo.epsilon_high,
            kl_clamp=algo.kl_clamp,
            kl_bias_correction=algo.kl_bias_correction,
            max_completion_length=self.config.rollout.max_completion_length,
            # DDP averages gradients over processes, so each process normalises by its own
            # sequence count and by the mean token count: the average is the global mean.
            num_sequences=len(rollout.texts),
            num_tokens=float(self.engine.mean_over_ranks(mask.sum())),
        )
        return mask, settings

    def _encode(self, model: torch.nn.Module, rollout: Rollout) -> SharedImageFeatures | None:
        """The rollout's unique prompts through ``model``'s vision encoder (None: not sharing)."""
        if not self.sharing.share_image_features or not has_images(rollout.prompts):
            return None
        with self.engine.precision_context():  # get_image_features bypasses the autocast
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
        with_entropy: bool = False,
    ) -> torch.Tensor | TokenScores:
        """Per-token log-probs ``[len(rows), T]`` of rollout rows under ``model`` (and their
        entropies, with ``with_entropy``)."""
        return group_logprobs(
            model,
            rollout.prompts,
            rollout.group_size,
            rollout.completion_ids,
            rollout.completion_mask,
            rows,
            self.engine.pad_token_id,
            self.config.rollout.temperature,
            image_features=features,
            share_prefix=self.sharing.share_prompt_prefix,
            with_entropy=with_entropy,
        )

    # --------------------------------------------------------------------------- logging
    def _log(
        self,
        batch: StepBatch,
        stats: CollectStats,
        update_metrics: dict[str, Any],
        validation: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Log the step's metrics (means over processes) every ``logging.log_steps`` steps, at
        the last step, and at every validation step, with the ``eval/*`` scores in the row."""
        rollout, rewards = batch.rollout, batch.scored.rewards
        lengths = rollout.lengths.float()
        metrics: dict[str, Any] = {
            "reward": rewards.mean(),
            "reward_std": rewards.std() if len(rewards) > 1 else 0.0,
            "advantage_abs": batch.advantages.abs().mean(),
            "zero_variance_groups": stats.zero_variance_fraction,
            "completion_length": lengths.mean(),
            "completion_length_max": lengths.max(),
            "truncated_fraction": rollout.truncated.float().mean(),
            "tokens_per_second": lengths.sum() / max(update_metrics.get("step_seconds", 1.0), 1e-9),
            "prompts_too_long": stats.prompts_too_long,
            **{f"reward/{k}": v.mean() for k, v in batch.scored.per_term.items()},
            **rollout_monitors(rollout),
            **update_metrics,
        }
        # Validation scores come from the main process alone: they join after the mean.
        metrics = {**self.engine.metrics_mean_over_ranks(metrics), **(validation or {})}
        if (
            self.step % self.config.logging.log_steps == 0
            or self.step == self.config.optim.max_steps
            or validation
        ):
            return self.engine.metrics.log(metrics, self.step)
        return {k: float(v) for k, v in metrics.items()}

    def _log_rollouts(self, batch: StepBatch) -> None:
        every = self.config.logging.rollout_log_steps
        if not every or (self.step % every and self.step != self.config.optim.max_steps):
            return
        folder = self.engine.output_dir / "rollouts"
        rank = self.engine.accelerator.process_index
        write_rollouts(folder, self.step, rank, batch.scored, batch.advantages)

    def save(self) -> None:
        state = {"sampler": self.sampler.state_dict(), "skipped_steps": self.skipped_steps}
        self.engine.save(self.step, state, final=self.step == self.config.optim.max_steps)

    def cleanup(self) -> None:
        self.engine.cleanup()


def run_training(config: TrainConfig) -> dict[str, float]:
    """Set up, train, clean up: what ``vlm-r1 train`` calls."""
    trainer = GRPOTrainer(config)
    trainer.setup()
    try:
        return trainer.train()
    finally:
        trainer.cleanup()
