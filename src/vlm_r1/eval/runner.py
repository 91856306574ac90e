"""Run a model (or any completion source) over a dataset and score it.

``evaluate_samples`` takes a ``generate`` function from prepared prompts to completion texts,
so the same scoring runs on a real checkpoint (``greedy_generator``) or on an oracle that
writes the ground truth in the model family's coordinate system (the test that catches
coordinate-system mistakes, which otherwise silently ruin scores).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_r1.config import ConfigError
from vlm_r1.data.jsonl import DataError, read_samples
from vlm_r1.data.sample import Sample
from vlm_r1.eval.metrics import CONVENTIONS, coco_detection_metrics, rec_metrics
from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.parsing import extract_answer, parse_number
from vlm_r1.policy.prompts import PreparedPrompt, prepare_prompt, stack_prompts
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rewards.common import gt_boxes, normalise_label, predicted_boxes
from vlm_r1.rewards.format import is_strict_format
from vlm_r1.rewards.registry import check_data_method

Generate = Callable[[list[PreparedPrompt]], list[str]]


def greedy_generator(
    model: Any, adapter: VLMAdapter, processor: Any, max_new_tokens: int = 256
) -> Generate:
    """Batched greedy decoding (left-padded prompts), vision placeholders suppressed."""
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = adapter.stop_token_ids(tokenizer)
    suppress = adapter.forbidden_token_ids(tokenizer) or None

    @torch.no_grad()
    def generate(prompts: list[PreparedPrompt]) -> list[str]:
        batch = {
            k: v.to(model.device)
            for k, v in stack_prompts([p.features for p in prompts], pad).items()
        }
        out = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            suppress_tokens=suppress,
        )
        return processor.batch_decode(
            out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )

    return generate


def _pixel_boxes(
    text: str, prompt: PreparedPrompt
) -> tuple[np.ndarray, list[str | None], list[float], str]:
    parsed, boxes = predicted_boxes(text, prompt.box_space)
    return boxes, [b.label for b in parsed.boxes], [b.score for b in parsed.boxes], parsed.status


def evaluate_samples(
    samples: Sequence[Sample],
    adapter: VLMAdapter,
    processor: Any,
    generate: Generate,
    convention: str = "default",
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate for every sample, score by task; returns ``(metrics, predictions)``."""
    predictions: list[dict[str, Any]] = []
    by_task: dict[str, list[tuple[PreparedPrompt, str]]] = defaultdict(list)
    for start in range(0, len(samples), batch_size):
        prompts = [
            prepare_prompt(adapter, processor, s) for s in samples[start : start + batch_size]
        ]
        for prompt, text in zip(prompts, generate(prompts), strict=True):
            by_task[prompt.sample.task].append((prompt, text))
        if on_batch:
            on_batch(len(prompts))
    metrics: dict[str, Any] = {}
    for task, items in by_task.items():
        task_metrics, rows = _score_task(task, items, convention)
        metrics[task] = {
            **task_metrics,
            "n": len(items),
            "format_failure_rate": float(np.mean([not is_strict_format(t) for _, t in items])),
        }
        predictions.extend(rows)
    return metrics, predictions


def _score_task(task: str, items: list[tuple[PreparedPrompt, str]], convention: str):
    rows = []
    if task == "rec":
        parsed = [_pixel_boxes(text, prompt) for prompt, text in items]
        truth = [gt_boxes(prompt.sample.solution)[0] for prompt, _ in items]
        metrics, ious = rec_metrics(
            [p[0] if len(p[0]) else None for p in parsed], truth, convention
        )
        for (prompt, text), p, iou, gt in zip(items, parsed, ious, truth, strict=True):
            rows.append(_row(prompt, text, p, {"iou": float(iou), "gt": gt.tolist()}))
        return metrics, rows
    if task == "ovd":
        parsed = [_pixel_boxes(text, prompt) for prompt, text in items]
        truth = []
        for prompt, _ in items:
            boxes, labels = gt_boxes(prompt.sample.solution)
            truth.append((boxes, [normalise_label(lab) or "" for lab in labels]))
        listed = {
            normalise_label(c)
            for prompt, _ in items
            for c in prompt.sample.meta.get("categories", [])
        }
        preds = [(p[0], [normalise_label(lab) or "" for lab in p[1]], p[2]) for p in parsed]
        metrics = coco_detection_metrics(preds, truth, sorted(c for c in listed if c))
        for (prompt, text), p, gt in zip(items, parsed, truth, strict=True):
            rows.append(_row(prompt, text, p, {"gt": gt[0].tolist(), "gt_labels": gt[1]}))
        return metrics, rows
    if task == "count":
        correct = []
        for prompt, text in items:
            value, gold = (
                parse_number(extract_answer(text).answer),
                parse_number(str(prompt.sample.solution)),
            )
            ok = value is not None and gold is not None and round(value) == gold
            correct.append(ok)
            rows.append(_row(prompt, text, None, {"correct": ok, "gt": prompt.sample.solution}))
        return {"accuracy": float(np.mean(correct))}, rows
    scores = []
    for prompt, text in items:
        # Eval has no config: a sample's own method may be a built-in only (no code, no judge).
        method = check_data_method(prompt.sample.reward_method or "default")
        spec = resolve_reward(method)
        score = call_reward(spec, [text], [prompt.sample.solution]).scores[0]
        scores.append(score)
        rows.append(_row(prompt, text, None, {"score": score, "gt": prompt.sample.solution}))
    return {"accuracy": float(np.mean(scores))}, rows


def _row(
    prompt: PreparedPrompt, text: str, parsed: tuple | None, extra: dict[str, Any]
) -> dict[str, Any]:
    row = {
        "id": prompt.sample.id,
        "task": prompt.sample.task,
        "images": list(prompt.sample.images),
        "question": prompt.sample.question,
        "completion": text,
        **extra,
    }
    if parsed is not None:
        row.update(pred=parsed[0].tolist(), pred_labels=parsed[1], status=parsed[3])
    return row


def load_eval_samples(
    data: str, image_folders: str | None = None, limit: int | None = None, seed: int = 42
) -> list[Sample]:
    """All samples, or ``limit`` drawn at random with ``seed`` (VLM-R1: 2000 per split, seed 42).

    Rows may name built-in reward methods only (eval has no config to declare custom code or
    the LLM judge); size limits are ``DataConfig``'s defaults."""
    samples = list(read_samples(data, image_folders, allowed_methods=()))
    if not samples:
        raise DataError(str(data), "<file>", "no samples to evaluate", data, "empty")
    if limit is not None and limit < len(samples):
        samples = random.Random(seed).sample(samples, limit)
    return samples


def check_eval_options(
    batch_size: int, max_new_tokens: int, limit: int | None, convention: str
) -> None:
    """Refuse impossible ``vlm-r1 eval`` options by their flag name, before anything loads."""
    for flag, value in (("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        if value < 1:
            raise ConfigError(f"{flag}={value} must be >= 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit={limit} must be >= 1 (leave it out to evaluate every sample)")
    if convention not in CONVENTIONS:
        raise ConfigError(
            f"--metric-convention={convention!r} is not allowed; choose one of {CONVENTIONS}"
        )


def evaluate_checkpoint(
    model_path: str,
    data: str,
    out_dir: str | Path | None = None,
    image_folders: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    convention: str = "default",
    limit: int | None = None,
    family: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``vlm-r1 eval``: load any checkpoint (full, or a LoRA adapter folder), generate greedily,
    score, and write ``predictions.jsonl`` and ``metrics.json`` under ``out_dir``."""
    from rich.progress import Progress

    from vlm_r1.models import load_model

    check_eval_options(batch_size, max_new_tokens, limit, convention)
    samples = load_eval_samples(data, image_folders, limit)
    adapter, model, processor = load_model(model_path, family)
    model.eval()
    generate = greedy_generator(model, adapter, processor, max_new_tokens)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"eval {Path(data).name}", total=len(samples))
        metrics, predictions = evaluate_samples(
            samples,
            adapter,
            processor,
            generate,
            convention,
            batch_size,
            on_batch=lambda n: bar.advance(task, n),
        )
    metrics["_meta"] = {
        "model": str(model_path),
        "data": str(data),
        "convention": convention,
        "samples": len(samples),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "predictions.jsonl", "w") as handle:
            for row in predictions:
                handle.write(json.dumps(row) + "\n")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
