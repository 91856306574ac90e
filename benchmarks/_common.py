"""Helpers shared by the side-by-side benchmarks (``grpo_step.py``, ``real_shape.py``).

Each benchmark runs every configuration in a child process of its own so that its peak RSS is
its own; a child prints one ``RESULT <json>`` line, which :func:`run_child` reads back. The TRL
side trains on the same shapes REC prompts with the same rewards as vlm-r1 (:func:`trl_rec_dataset`,
:func:`trl_rec_rewards`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB (``ru_maxrss`` is KiB on Linux).

    Linux carries the peak across ``execve``, so a child's figure is at least its parent's RSS
    at the moment it was started: keep benchmark parents small."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)


def run_child(command: list[str], what: str, fatal: bool = True) -> dict | None:
    """Run a benchmark child and return the JSON of its last ``RESULT`` line.

    On failure, print the tails of its output and exit (``fatal``) or return None."""
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        if fatal:
            raise SystemExit(f"benchmark run {what} failed")
        sys.stderr.write(f"\nbenchmark run {what} failed (exit status {done.returncode})\n")
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def trl_rec_dataset(data: str):
    """The shapes REC samples of ``data`` (a vlm-r1 JSONL file) as a TRL conversational dataset
    with one image per row and the answer in ``solution``; prompts are vlm-r1's prompt text."""
    from datasets import Dataset

    from vlm_r1.data.jsonl import load_sample_images, read_samples
    from vlm_r1.models import get_adapter

    adapter = get_adapter("qwen2_5_vl")
    rows = [
        {
            "prompt": [{"role": "user", "content": adapter.prompt(s.task, s.question)}],
            "image": load_sample_images(s)[0],
            "solution": s.answer_text(),
        }
        for s in read_samples(data)
    ]
    return Dataset.from_list(rows)


def trl_rec_rewards() -> list:
    """vlm-r1's ``rec_iou`` accuracy and ``format`` rewards as TRL reward functions."""
    from vlm_r1.rewards import resolve_reward
    from vlm_r1.rewards.registry import call_reward

    iou, fmt = resolve_reward("rec_iou"), resolve_reward("format")

    def text(completion) -> str:
        return completion[0]["content"] if isinstance(completion, list) else completion

    def rec_iou(completions, solution, **_):
        return call_reward(iou, [text(c) for c in completions], solution).scores

    def format_reward(completions, solution, **_):
        return call_reward(fmt, [text(c) for c in completions], solution).scores

    return [rec_iou, format_reward]


def trl_trainer(args, output_dir: str, callback, **settings):
    """TRL's ``GRPOTrainer`` as both benchmarks run it on the REC prompts of ``args.data``:
    CPU, fp32, no gradient checkpointing, plain sampling (temperature 1, no top-p/top-k), beta
    0.04, loss "grpo", no checkpoints, one worker, seed 0, left-padded prompts. ``args`` gives
    the model folder and the shapes (prompts, generations, micro-batch, completion length);
    ``settings`` are the remaining ``GRPOConfig`` fields (learning rate, steps, ...)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.prompts * args.generations // args.micro_batch,
        num_generations=args.generations,
        max_completion_length=args.max_completion,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.04,
        loss_type="grpo",
        scale_rewards="group",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        shuffle_dataset=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        **settings,
    )
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(args.model)
    processor.tokenizer.padding_side = "left"
    return GRPOTrainer(
        model=model,
        reward_funcs=trl_rec_rewards(),
        args=config,
        train_dataset=trl_rec_dataset(args.data),
        processing_class=processor,
        callbacks=[callback],
    )
