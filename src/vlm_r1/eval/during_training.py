"""Validation during training (the ``eval`` section): every ``eval.steps`` steps and after the
last one, the policy being trained answers held-out samples greedily, scored by the code of
``vlm-r1 eval``.

Same code, same numbers. Prompts are built by ``prepare_prompt`` with the run's ``prompt``
settings, answers written by :class:`~vlm_r1.eval.runner.GreedyGenerator`, shared over the
processes as ``vlm-r1 eval`` shares them (the one-process batches dealt round-robin, gathered to
the main process in sample order: :mod:`vlm_r1.eval.parallel`) and scored there by
``score_completions``. So what is logged at step N is what ``vlm-r1 eval`` reports for
checkpoint N with the same ``limit``, ``batch_size``, ``max_new_tokens`` and convention (bit for
bit in float32 on CPU), under every engine and process count.

Training is not disturbed: the model is switched to eval mode (no dropout) and every module is
put back in the mode it had, and every random-number state (Python, NumPy, torch CPU and CUDA)
is restored afterwards, so a run with validation on trains exactly as with it off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vlm_r1.checkpoint import rng_state, set_rng_state
from vlm_r1.config import ConfigError
from vlm_r1.config.sections import EvalConfig, PromptConfig
from vlm_r1.data.hf_datasets import SourceKeys
from vlm_r1.data.sample import Sample
from vlm_r1.errors import UserFacingError
from vlm_r1.eval.parallel import Processes, gather_to_main, merge_shards, shard_batches
from vlm_r1.eval.runner import (
    GreedyGenerator,
    generate_completions,
    load_eval_samples,
    score_completions,
)
from vlm_r1.policy.prompts import prepare_prompt

if TYPE_CHECKING:
    from vlm_r1.engine import Engine

logger = logging.getLogger(__name__)

#: What an ``hf:`` source's errors call its settings here.
EVAL_KEYS = SourceKeys("eval.data", "eval.split", "eval.columns")


def load_validation_samples(settings: EvalConfig) -> list[Sample]:
    """The held-out samples, read and checked like ``vlm-r1 eval --data`` (same reader, same
    ``limit`` draw with its fixed seed): called before the model loads, so a missing file or a
    bad row stops the run in seconds, with an error naming ``eval.data``."""
    try:
        return load_eval_samples(
            settings.data,
            settings.image_folders,
            settings.limit,
            split=settings.split,
            columns=settings.columns or None,
            keys=EVAL_KEYS,
        )
    except ConfigError:
        raise  # already names its eval.* key
    except UserFacingError as err:
        raise ConfigError(f"eval.data={settings.data!r} cannot be used: {err}") from err


def is_validation_step(step: int, every: int, max_steps: int) -> bool:
    """Validate at every multiple of ``every`` and after the last step (``every=0``: never).
    A function of the step alone, so a resumed run keeps the schedule."""
    return every > 0 and (step % every == 0 or step == max_steps)


def logged_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``score_completions``' per-task metrics as ``eval/<task>/<metric>`` (``eval/rec/miou``,
    ``eval/ovd/mAP``), names as in ``vlm-r1 eval``'s ``metrics.json``. Sample counts are left
    out: they are the same at every validation, not a curve."""
    return {
        f"eval/{task}/{name}": float(value)
        for task, values in sorted(metrics.items())
        if not task.startswith("_")
        for name, value in values.items()
        if name != "n"
    }


@contextmanager
def untouched_training_state(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside (dropout off, as ``vlm-r1 eval`` runs), then every module back in its
    own mode and every random-number generator back to its state, whatever happened inside."""
    modes = [(module, module.training) for module in model.modules()]
    saved = rng_state()
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        set_rng_state(saved)


@dataclass
class Validation:
    """The ``eval`` section of a run with its samples, read once when the run starts."""

    settings: EvalConfig
    samples: list[Sample]
    prompt: PromptConfig | None = None

    @classmethod
    def start(cls, settings: EvalConfig, prompt: PromptConfig | None) -> Validation | None:
        """Read the samples now (before the model loads); ``None`` when validation is off."""
        if not settings.steps:
            return None
        return cls(settings, load_validation_samples(settings), prompt)

    def due(self, step: int, max_steps: int) -> bool:
        return is_validation_step(step, self.settings.steps, max_steps)

    def run(self, engine: Engine) -> dict[str, float]:
        """Evaluate the policy now; every process must call it. The main process returns the
        ``eval/*`` metrics, the others ``{}``."""
        started = time.perf_counter()
        acc = engine.accelerator
        processes = Processes(acc.process_index, acc.num_processes, acc.local_process_index)
        settings, adapter, processor = self.settings, engine.adapter, engine.processor
        batches = shard_batches(
            len(self.samples), settings.batch_size, processes.rank, processes.world_size
        )
        with engine.for_generation() as model, untouched_training_state(model):
            generate = GreedyGenerator(model, adapter, processor, settings.max_new_tokens)
            done = generate_completions(
                self.samples,
                batches,
                lambda sample: prepare_prompt(
                    adapter, processor, sample, prompt_config=self.prompt
                ),
                generate,
            )
        gathered = gather_to_main(done, processes)
        if gathered is None:
            return {}
        completions = merge_shards(gathered, len(self.samples))
        metrics, _ = score_completions(
            self.samples, completions, adapter, settings.metric_convention
        )
        logger.info(
            "validation: %d samples (%s) in %.1f s",
            len(self.samples),
            ", ".join(f"{task} {values['n']}" for task, values in sorted(metrics.items())),
            time.perf_counter() - started,
        )
        return logged_metrics(metrics)


def validate_if_due(
    validation: Validation | None, engine: Engine, step: int, max_steps: int
) -> dict[str, float]:
    """What a training loop calls after each step: the ``eval/*`` metrics when ``step`` is a
    validation step (on the main process; ``{}`` on the others), else ``{}``. Every process
    calls it at every step, so all of them take part in the same validations."""
    if validation is None or not validation.due(step, max_steps):
        return {}
    return validation.run(engine)
