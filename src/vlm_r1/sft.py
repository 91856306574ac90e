"""Supervised fine-tuning on the same ``Sample`` data: the paper's baseline and a warm start.

The target is what a perfect model would write: for grounding tasks the ground-truth boxes in
the model family's own coordinate system (via the adapter), optionally after a short templated
``<think>``; the loss is the mean negative log-likelihood of the target tokens only (the prompt
and its image tokens are context). It shares the GRPO trainer's ``Engine``: accelerate, LoRA and
freezing, atomic checkpoints, exact resume, metrics.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from vlm_r1.config import (
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    Seed,
    check_fields,
    to_dict,
)
from vlm_r1.config.sections import EvalConfig, PromptConfig
from vlm_r1.data.loading import load_training_samples
from vlm_r1.engine import (
    Engine,
    EngineConfig,
    Progress,
    StopSignal,
    launched_as_main_process,
)
from vlm_r1.eval.during_training import Validation, validate_if_due
from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.boxes import BoxSpace, as_written, points_to_model, round_boxes, to_model
from vlm_r1.policy.logprobs import completion_logprobs
from vlm_r1.policy.prompts import PreparedPrompt, prepare_prompt
from vlm_r1.policy.sampling import PromptSampler
from vlm_r1.rewards.common import gt_boxes

logger = logging.getLogger(__name__)


def _sft_optim() -> OptimConfig:
    return OptimConfig(prompts_per_step=8, micro_batch_size=8, learning_rate=1e-5, max_steps=1000)


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """The words around each question, as in GRPO's ``prompt`` section (same defaults)."""
    optim: OptimConfig = field(default_factory=_sft_optim)
    """``prompts_per_step`` is the number of samples per optimiser step."""
    checkpoint: CheckpointConfig = field(
        default_factory=lambda: CheckpointConfig(output_dir="out/sft")
    )
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Validation on held-out data during training, as in GRPO's ``eval`` section."""
    think: bool = True
    """Prefix the answer with a short templated <think> so the format matches GRPO's."""
    seed: Seed = 0

    def validate(self) -> SFTConfig:
        """Check every value now, before any model is loaded (see ``config.check_fields``)."""
        check_fields(self)
        return self


def box_answer(sample: Any, spaces: tuple[BoxSpace, ...]) -> str:
    """The ground truth as the model should answer it, each box in its own image's system:
    REC a bare ``[x1, y1, x2, y2]``, detection VLM-R1's ``[{"bbox_2d", "label"}]`` list
    ("None" when empty). Boxes of a multi-image sample carry ``"image": k`` (from 1)."""
    solution = sample.solution
    boxes, labels = gt_boxes(solution)
    numbers = list(getattr(solution, "images", ()) or ())
    written = []
    for i, box in enumerate(boxes):
        space = spaces[numbers[i] - 1] if numbers else spaces[0]
        model = round_boxes(to_model([box], space), space)[0]
        written.append(as_written(model))
    if sample.task == "rec" and not numbers:
        return json.dumps(written[0])
    if not written:
        return "None"
    items = []
    for i, box in enumerate(written):
        item: dict[str, Any] = {"bbox_2d": box}
        if sample.task == "ovd":
            item["label"] = labels[i]
        if numbers:
            item["image"] = numbers[i]
        items.append(item)
    return json.dumps(items[:1] if sample.task == "rec" else items)


def target_text(prompt: PreparedPrompt, adapter: VLMAdapter, processor: Any, think: bool) -> str:
    """What the model should write for this sample, boxes in its own coordinate system (a
    point task: the centre of the target's box, as a point in that system)."""
    sample = prompt.sample
    targets = gt_boxes(sample.solution)[0] if sample.task == "point" else []
    if len(targets) and prompt.image_size is not None:
        x1, y1, x2, y2 = targets[0]
        space = adapter.box_space(processor, prompt.image_size)
        centre = round_boxes(points_to_model([[(x1 + x2) / 2, (y1 + y2) / 2]], space), space)[0]
        answer = json.dumps(as_written(centre))
        reasoning = "I find the object to click."
    elif sample.task in ("rec", "ovd") and prompt.image_size is not None:
        answer = box_answer(
            sample, prompt.spaces() or (adapter.box_space(processor, prompt.image_size),)
        )
        reasoning = "I find the object the question describes."
    else:
        answer = str(sample.solution)
        reasoning = "I look at the image to answer."
    return (
        f"<think>{reasoning}</think><answer>{answer}</answer>"
        if think
        else f"<answer>{answer}</answer>"
    )


class SFTTrainer:
    def __init__(self, config: SFTConfig):
        self.config = config
        self.step = 0

    def setup(self) -> None:
        cfg = self.config
        # Data before the model: a bad row fails in seconds (SFT has no rewards: rows may name
        # registered rewards only).
        self.samples = load_training_samples(cfg.data, launched_as_main_process())
        self.validation = Validation.start(cfg.eval, cfg.prompt)  # held-out data, checked now
        self.engine = Engine(
            EngineConfig(
                cfg.model,
                cfg.optim,
                cfg.checkpoint,
                cfg.logging,
                cfg.seed,
                to_dict(cfg),
                default_config=to_dict(SFTConfig()),
            )
        )
        acc = self.engine.accelerator
        self.sampler = PromptSampler(
            len(self.samples), cfg.seed, cfg.data.shuffle, acc.process_index, acc.num_processes
        )
        tokenizer = self.engine.processor.tokenizer
        self.eos_text = self.engine.adapter.eos_token
        self.tokenizer = tokenizer
        state = self.engine.resume()
        if state is not None:
            self.step = int(state["step"])
            self.sampler.load_state_dict(state["sampler"])

    def _targets(self, prompts: list[PreparedPrompt]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded target token ids ``[N, T]`` (EOS appended) and their mask."""
        engine = self.engine
        texts = [
            target_text(p, engine.adapter, engine.processor, self.config.think) + self.eos_text
            for p in prompts
        ]
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), engine.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, : len(e)] = 1
        return ids, mask

    def train(self) -> dict[str, float]:
        cfg, engine = self.config, self.engine
        last: dict[str, float] = {}
        show = cfg.logging.progress and engine.accelerator.is_main_process
        with (
            StopSignal() as stop,
            Progress(
                show, cfg.optim.max_steps, self.step, "SFT", ("loss", "token_accuracy")
            ) as bar,
        ):
            while self.step < cfg.optim.max_steps and not stop.requested:
                started = time.perf_counter()
                prompts = [
                    prepare_prompt(
                        engine.adapter,
                        engine.processor,
                        self.samples[i],
                        cfg.data.max_image_pixels,
                        cfg.prompt,
                    )
                    for _, i in self.sampler.take(cfg.optim.prompts_per_step)
                ]
                metrics = self.update(prompts)
                self.step += 1
                metrics["step_seconds"] = time.perf_counter() - started
                # Validation scores come from the main process alone: they join after the mean.
                validation = validate_if_due(
                    self.validation, engine, self.step, cfg.optim.max_steps
                )
                metrics = {**engine.metrics_mean_over_ranks(metrics), **validation}
                last = (
                    engine.metrics.log(metrics, self.step)
                    if self.step % cfg.logging.log_steps == 0 or validation
                    else last
                )
                bar.update({k: float(v) for k, v in metrics.items()})
                if (
                    self.step % cfg.checkpoint.save_steps == 0
                    or self.step == cfg.optim.max_steps
                    or stop.requested
                ):
                    engine.save(
                        self.step,
                        {"sampler": self.sampler.state_dict()},
                        final=self.step == cfg.optim.max_steps,
                    )
        if self.step < cfg.optim.max_steps:
            stop.raise_if_requested(self.step)  # checkpoint saved above; exit 128 + signal
        return last

    def update(self, prompts: list[PreparedPrompt]) -> dict[str, Any]:
        cfg, engine = self.config, self.engine
        ids, mask = self._targets(prompts)
        total_tokens = mask.sum().clamp(min=1)
        loss_total, correct = torch.zeros(()), torch.zeros(())
        size = cfg.optim.micro_batch_size
        starts = list(range(0, len(prompts), size))
        for k, start in enumerate(starts):
            rows = slice(start, start + size)
            last = k == len(starts) - 1
            with engine.micro_batch(last):
                logps = completion_logprobs(
                    engine.model, prompts[rows], ids[rows], mask[rows], engine.pad_token_id
                )
                m = mask[rows].to(logps.device).float()
                loss = -(logps * m).sum() / total_tokens  # token mean over the whole step
                engine.backward(loss, last)
            loss_total += loss.detach().cpu()
            correct += (
                ((logps.detach() > -0.6931).float() * m).sum().cpu()
            )  # p > 0.5: the argmax token
        grad_norm, stepped = engine.optimizer_step()
        return {
            "loss": loss_total,
            "token_accuracy": correct / total_tokens,
            "grad_norm": grad_norm,
            "learning_rate": engine.scheduler.get_last_lr()[0],
            "skipped": float(not stepped),
            "optimizer_steps": engine.optimizer_steps,
        }

    def cleanup(self) -> None:
        self.engine.cleanup()


def run_sft(config: SFTConfig) -> dict[str, float]:
    trainer = SFTTrainer(config)
    trainer.setup()
    try:
        return trainer.train()
    finally:
        trainer.cleanup()
