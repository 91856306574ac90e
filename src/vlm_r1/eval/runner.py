"""Run a model (or any completion source) over a dataset and score it.

``evaluate_samples`` takes a ``generate`` function from prepared prompts to completion texts,
so the same scoring runs on a real checkpoint (``greedy_generator``, or vLLM's engine through
``vllm_backend``) or on an oracle that writes the ground truth in the model family's
coordinate system (the test that catches coordinate-system mistakes, which otherwise silently
ruin scores).

Generating and scoring are separate steps joined by :class:`Completion` records (the text and
the box space scoring reads), so that under a launch of several processes each process
generates its share of the batches and the main process scores all completions at once, in
sample order, exactly as one process would (``parallel``).
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_r1.config.sections import PromptConfig
from vlm_r1.data.hf_datasets import DatasetReader, SourceKeys, is_datasets_source
from vlm_r1.data.jsonl import DataError, RowReader, read_samples
from vlm_r1.data.sample import Sample
from vlm_r1.eval.metrics import coco_detection_metrics, point_metrics, rec_metrics
from vlm_r1.eval.options import (
    DEFAULT_BATCH_SIZE,
    check_eval_options,
    cuda_device_count,
    default_dtype,
    resolve_device,
    resolve_prompt,
)
from vlm_r1.eval.parallel import (
    Processes,
    barrier,
    gather_to_main,
    launched_processes,
    merge_shards,
    process_group,
    shard_batches,
)
from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.parsing import extract_answer, is_well_formed_boxes, parse_number
from vlm_r1.policy.prompts import PreparedPrompt, chat_prompt_text, prepare_prompt, stack_prompts
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rewards.common import gt_boxes, normalise_label, predicted_boxes
from vlm_r1.rewards.format import is_strict_format
from vlm_r1.rewards.points import predicted_point
from vlm_r1.rewards.registry import check_data_method

__all__ = [
    "Completion",
    "GreedyGenerator",
    "check_eval_options",
    "evaluate_checkpoint",
    "evaluate_samples",
    "generate_completions",
    "greedy_generator",
    "load_eval_samples",
    "score_completions",
]

Generate = Callable[[list[PreparedPrompt]], list[str]]
Prepare = Callable[[Sample], PreparedPrompt]


class GreedyGenerator:
    """Batched greedy decoding with HF ``generate`` (left-padded prompts), vision placeholders
    suppressed. Counts the tokens it generates (each completion up to and including its stop
    token), for the throughput report."""

    def __init__(self, model: Any, adapter: VLMAdapter, processor: Any, max_new_tokens: int = 256):
        tokenizer = processor.tokenizer
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.eos = adapter.stop_token_ids(tokenizer)
        self.suppress = adapter.forbidden_token_ids(tokenizer) or None
        self.generated_tokens = 0

    @torch.no_grad()
    def __call__(self, prompts: list[PreparedPrompt]) -> list[str]:
        device = self.model.device
        batch = {
            k: v.to(device)
            for k, v in stack_prompts([p.features for p in prompts], self.pad).items()
        }
        out = self.model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            suppress_tokens=self.suppress,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        self.generated_tokens += completion_lengths(new, self.eos)
        return self.processor.batch_decode(new, skip_special_tokens=True)


def completion_lengths(new_tokens: torch.Tensor, eos_ids: Sequence[int]) -> int:
    """Generated tokens in a batch: each row up to and including its first stop token (the
    padding after it is not generated work), the whole row when it never stopped."""
    if new_tokens.numel() == 0:
        return 0
    is_eos = torch.isin(new_tokens, torch.tensor(list(eos_ids), device=new_tokens.device))
    stopped = is_eos.any(dim=1)
    first = is_eos.int().argmax(dim=1) + 1
    return int(torch.where(stopped, first, new_tokens.shape[1]).sum())


def greedy_generator(
    model: Any, adapter: VLMAdapter, processor: Any, max_new_tokens: int = 256
) -> GreedyGenerator:
    """Batched greedy decoding (left-padded prompts), vision placeholders suppressed."""
    return GreedyGenerator(model, adapter, processor, max_new_tokens)


@dataclass(frozen=True)
class Completion:
    """One sample's answer and what scoring needs besides the sample: small and picklable, so
    it is what processes send to the main one."""

    text: str
    box_space: BoxSpace | None
    image_size: tuple[int, int] | None
    #: Every image's box space (multi-image answers name their image).
    image_spaces: tuple[BoxSpace, ...] = ()


def generate_completions(
    samples: Sequence[Sample],
    batches: Sequence[Sequence[int]],
    prepare: Prepare,
    generate: Generate,
    on_batch: Callable[[int], None] | None = None,
) -> list[tuple[int, Completion]]:
    """``(sample index, completion)`` for every sample of ``batches``, one generate call each."""
    done: list[tuple[int, Completion]] = []
    for indices in batches:
        prompts = [prepare(samples[i]) for i in indices]
        texts = generate(prompts)
        if len(texts) != len(prompts):
            raise ValueError(f"generate returned {len(texts)} texts for {len(prompts)} prompts")
        for index, prompt, text in zip(indices, prompts, texts, strict=True):
            done.append(
                (index, Completion(text, prompt.box_space, prompt.image_size, prompt.spaces()))
            )
        if on_batch:
            on_batch(len(prompts))
    return done


def score_completions(
    samples: Sequence[Sample],
    completions: Sequence[Completion],
    adapter: VLMAdapter,
    convention: str = "default",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score completions (in sample order) by task; returns ``(metrics, predictions)``."""
    by_task: dict[str, list[tuple[PreparedPrompt, str]]] = defaultdict(list)
    for sample, done in zip(samples, completions, strict=True):
        # Scoring reads the sample and its box space only, never the model inputs.
        view = PreparedPrompt(
            sample, {}, done.box_space, done.image_size, adapter, image_spaces=done.image_spaces
        )
        by_task[sample.task].append((view, done.text))
    metrics: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    for task, items in by_task.items():
        task_metrics, rows = _score_task(task, items, convention)
        metrics[task] = {
            **task_metrics,
            "n": len(items),
            "format_failure_rate": float(np.mean([not is_strict_format(t) for _, t in items])),
        }
        predictions.extend(rows)
    return metrics, predictions


def evaluate_samples(
    samples: Sequence[Sample],
    adapter: VLMAdapter,
    processor: Any,
    generate: Generate,
    convention: str = "default",
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
    prompt_config: PromptConfig | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate for every sample in this process, score by task; returns ``(metrics, predictions)``.
    Prompts are worded by ``prompt_config`` (default: VLM-R1's)."""
    done = generate_completions(
        samples,
        shard_batches(len(samples), batch_size, 0, 1),
        lambda sample: prepare_prompt(adapter, processor, sample, prompt_config=prompt_config),
        generate,
        on_batch,
    )
    return score_completions(samples, merge_shards([done], len(samples)), adapter, convention)


def _pixel_boxes(
    text: str, prompt: PreparedPrompt
) -> tuple[np.ndarray, list[str | None], list[float], str]:
    parsed, boxes = predicted_boxes(text, prompt.spaces())
    return boxes, [b.label for b in parsed.boxes], [b.score for b in parsed.boxes], parsed.status


def _score_task(task: str, items: list[tuple[PreparedPrompt, str]], convention: str):
    rows = []
    if task == "rec":
        parsed = [_pixel_boxes(text, prompt) for prompt, text in items]
        truth = [gt_boxes(prompt.sample.solution, prompt.spaces())[0] for prompt, _ in items]
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
            boxes, labels = gt_boxes(prompt.sample.solution, prompt.spaces())
            truth.append((boxes, [normalise_label(lab) or "" for lab in labels]))
        listed = {
            normalise_label(c)
            for prompt, _ in items
            for c in prompt.sample.meta.get("categories", [])
        }
        preds = [(p[0], [normalise_label(lab) or "" for lab in p[1]], p[2]) for p in parsed]
        metrics = coco_detection_metrics(preds, truth, sorted(c for c in listed if c))
        # mAP reads answers leniently (boxes salvaged from broken JSON); this is the share the
        # strict detection rewards would pay for, the JSON list the prompt asks for.
        well_formed = [is_well_formed_boxes(extract_answer(text).answer) for _, text in items]
        metrics["well_formed_rate"] = float(np.mean(well_formed))
        for (prompt, text), p, gt in zip(items, parsed, truth, strict=True):
            rows.append(_row(prompt, text, p, {"gt": gt[0].tolist(), "gt_labels": gt[1]}))
        return metrics, rows
    if task == "point":
        clicks = [predicted_point(text, prompt.box_space) for prompt, text in items]
        truth = [gt_boxes(prompt.sample.solution)[0] for prompt, _ in items]
        sizes = [prompt.image_size for prompt, _ in items]
        metrics, inside, distances = point_metrics([c[1] for c in clicks], truth, sizes)
        for (prompt, text), (parsed, point), ok, dist, gt in zip(
            items, clicks, inside, distances, truth, strict=True
        ):
            extra = {
                "pred": None if point is None else [float(v) for v in point],
                "status": parsed.status,
                "inside": bool(ok),
                "distance": float(dist),
                "gt": gt[:1].tolist(),
            }
            rows.append(_row(prompt, text, None, extra))
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
    data: str,
    image_folders: str | None = None,
    limit: int | None = None,
    seed: int = 42,
    split: str | None = None,
    columns: dict[str, str] | None = None,
    keys: SourceKeys | None = None,
) -> list[Sample]:
    """All samples, or ``limit`` drawn at random with ``seed`` (VLM-R1: 2000 per split, seed 42).

    ``data`` is VLM-R1 JSONL/JSON, or a ``datasets`` source (``hf:...``, read like
    ``data.train``): ``split`` (default: its only split) and ``columns`` as ``data.split`` and
    ``data.columns``; ``keys`` are the setting names its errors give (default: the flags).
    Rows may name built-in reward methods only (eval has no config to declare custom code or
    the LLM judge); size limits are ``DataConfig``'s defaults."""
    if is_datasets_source(data):
        keys = keys or SourceKeys("--data", "split", "columns")
        reader: RowReader = DatasetReader(
            data, split, columns, image_folder=image_folders, allowed_methods=(), keys=keys
        )
    else:
        reader = read_samples(data, image_folders, allowed_methods=())
    samples = list(reader)
    if not samples:
        raise DataError(str(data), "<file>", "no samples to evaluate", data, "empty")
    if limit is not None and limit < len(samples):
        samples = random.Random(seed).sample(samples, limit)
    return samples


def evaluate_checkpoint(
    model_path: str,
    data: str,
    out_dir: str | Path | None = None,
    image_folders: str | None = None,
    batch_size: int | None = None,
    max_new_tokens: int = 256,
    convention: str = "default",
    limit: int | None = None,
    family: str | None = None,
    progress: bool = True,
    *,
    device: str | None = None,
    dtype: str | None = None,
    backend: str = "hf",
    prompt_config: PromptConfig | str | Path | None = None,
    split: str | None = None,
    columns: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """``vlm-r1 eval``: load any checkpoint (full, or a LoRA adapter folder for ``hf``),
    generate greedily, score, and write ``predictions.jsonl`` and ``metrics.json`` under
    ``out_dir``.

    Launched as several processes (``torchrun`` / ``accelerate launch``), each generates its
    share and the main process scores and writes everything: it returns the metrics, every
    other process returns ``None``. ``batch_size`` left out is the backend's default
    (:data:`~vlm_r1.eval.options.DEFAULT_BATCH_SIZE`); ``dtype`` left out is float32 on CPU,
    bfloat16 on CUDA. ``device`` left out is ``cpu`` for ``hf``, where this function always
    ran, so library callers (the demo) keep their numbers, and ``auto`` for ``vllm``; the
    command line's default is ``auto``.
    ``metrics["_meta"]["throughput"]`` holds the generation time and rates.
    Prompts are worded by ``prompt_config`` (settings, or a file of them as ``--prompt-config``
    takes), else by the settings a vlm-r1 run saved in the model folder, else VLM-R1's
    (:func:`~vlm_r1.eval.options.resolve_prompt`); ``_meta["prompt"]`` says which.
    ``split`` and ``columns``: for a ``datasets`` source (``hf:...``), as ``load_eval_samples``.
    """
    from rich.progress import Progress

    if device is None:
        device = "auto" if backend == "vllm" else "cpu"
    check_eval_options(batch_size, max_new_tokens, limit, convention, device, dtype, backend)
    prompt, prompt_source = resolve_prompt(prompt_config, model_path)
    processes = launched_processes()
    resolved = resolve_device(
        device, processes.local_rank, processes.world_size, cuda_device_count()
    )
    vllm_module = None
    if backend == "vllm":
        from vlm_r1.eval.vllm_backend import check_vllm_device, require_vllm

        vllm_module = require_vllm()
        check_vllm_device(device, resolved)
    dtype = dtype or default_dtype(resolved)
    batch_size = batch_size or DEFAULT_BATCH_SIZE[backend]
    samples = load_eval_samples(data, image_folders, limit, split=split, columns=columns)
    with process_group(processes):
        adapter, processor, prepare, generate = _start_backend(
            backend,
            vllm_module,
            model_path,
            family,
            resolved,
            dtype,
            processes,
            max_new_tokens,
            max(len(s.images) for s in samples),
            prompt,
        )
        batches = shard_batches(len(samples), batch_size, processes.rank, processes.world_size)
        barrier(processes)  # time generation only, from when every process has its model
        started = time.perf_counter()
        mine = sum(len(b) for b in batches)
        with Progress(disable=not (progress and processes.is_main), transient=True) as bar:
            shard = f" (process 0 of {processes.world_size})" if processes.world_size > 1 else ""
            task = bar.add_task(f"eval {Path(data).name}{shard}", total=mine)
            done = generate_completions(
                samples, batches, prepare, generate, on_batch=lambda n: bar.advance(task, n)
            )
        gathered = gather_to_main((done, getattr(generate, "generated_tokens", None)), processes)
        seconds = time.perf_counter() - started
    if gathered is None:
        return None
    completions = merge_shards([part for part, _ in gathered], len(samples))
    metrics, predictions = score_completions(samples, completions, adapter, convention)
    counts = [tokens for _, tokens in gathered]
    metrics["_meta"] = {
        "model": str(model_path),
        "data": str(data),
        "convention": convention,
        "samples": len(samples),
        "backend": backend,
        "device": resolved.split(":")[0],
        "dtype": dtype,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "prompt": prompt_source,
        "throughput": throughput(
            len(samples),
            None if None in counts else sum(counts),
            seconds,
            processes.world_size,
        ),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "predictions.jsonl", "w") as handle:
            for row in predictions:
                handle.write(json.dumps(row) + "\n")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def throughput(
    samples: int, generated_tokens: int | None, seconds: float, processes: int
) -> dict[str, Any]:
    """Rates over the generation phase of all processes together (model loading and scoring
    excluded: they do not grow with the sample count the way generation does)."""
    seconds = max(seconds, 1e-9)
    return {
        "seconds": round(seconds, 3),
        "processes": processes,
        "samples_per_s": round(samples / seconds, 3),
        "generated_tokens": generated_tokens,
        "generated_tokens_per_s": (
            None if generated_tokens is None else round(generated_tokens / seconds, 1)
        ),
    }


def _start_backend(
    backend: str,
    vllm_module: Any,
    model_path: str,
    family: str | None,
    device: str,
    dtype: str,
    processes: Processes,
    max_new_tokens: int,
    max_images: int,
    prompt: PromptConfig,
) -> tuple[VLMAdapter, Any, Prepare, Generate]:
    """``(adapter, processor, prepare, generate)`` of this process's backend, model loaded;
    ``prepare`` words each sample's prompt by ``prompt``."""
    if backend == "vllm":
        from vlm_r1.eval.vllm_backend import VLLMGreedyGenerator, scoring_prompt, vllm_checkpoint

        source, adapter, processor = vllm_checkpoint(model_path, family)
        generate: Generate = VLLMGreedyGenerator.start(
            vllm_module,
            source,
            adapter,
            processor,
            dtype=dtype,
            world_size=processes.world_size,
            max_images=max_images,
            max_new_tokens=max_new_tokens,
        )

        def prepare(sample: Sample) -> PreparedPrompt:
            # vLLM is sent the chat text; it preprocesses the images itself.
            text = chat_prompt_text(adapter, processor, sample, prompt)
            return replace(scoring_prompt(adapter, processor, sample), chat_text=text)

        return adapter, processor, prepare, generate
    from vlm_r1.models import load_model

    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.set_device(device)
    # On a GPU the weights load straight onto it (no full copy in host memory first).
    adapter, model, processor = load_model(
        model_path, family, dtype=dtype, **({"device_map": device} if on_gpu else {})
    )
    model.eval()
    return (
        adapter,
        processor,
        lambda s: prepare_prompt(adapter, processor, s, prompt_config=prompt),
        GreedyGenerator(model, adapter, processor, max_new_tokens),
    )
