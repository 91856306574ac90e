"""GRPO step time and peak memory: vlm-r1 (shared paths), vlm-r1 (naive paths), TRL's GRPOTrainer.

    python benchmarks/grpo_step.py            # ~10 minutes on a 2-core CPU

All three train the same local Qwen2.5-VL checkpoint (demo size, 4.9M parameters, fp32) on the
same shapes REC prompts with the same settings: 448x448 images (256 image tokens after the
2x2 merge, 1,024 vision patches), G=8, 4 prompts (32 completions) per optimiser step, at most
64 completion tokens, temperature 1, beta=0.04 (a reference model), loss "grpo", micro-batches
of 8 completions, the same learning rate; mu (num_iterations) 1 and 2.

- (a) vlm-r1, shared paths (the defaults): shared-prefill generation; in the training forwards
  each image encoded once per step and each prompt run once per micro-batch (KV cache).
- (b) vlm-r1, naive paths: the prompt and image repeated G times in generation and in every
  forward (``speed.*=false``), i.e. what TRL does, inside vlm-r1's trainer.
- (c) TRL ``GRPOTrainer`` on CPU (``use_cpu=True, bf16=False, gradient_checkpointing=False``);
  its ``per_device_train_batch_size`` counts completions: 8 x 4 accumulation steps = 32.

Each configuration runs in its own Python process so that its peak RSS is its own. A step's
time is wall-clock between consecutive optimiser steps (rollout, rewards, reference and
old-policy log-probs, forward/backward, optimiser), averaged over whole rollout batches after
the first (warm-up) batch. Tokens/s counts prompt + completion tokens of the completions
trained per second. The last line is ``speedup_vs_trl=<x> memory_vs_trl=<y>`` for mu=1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import mean as _mean
from _common import peak_rss_mb as _peak_rss_mb
from _common import run_child, trl_trainer

RUNS = ("vlm-r1 shared", "vlm-r1 naive", "trl")


# ---------------------------------------------------------------------------------- setup
def prepare(workdir: Path, image_size: int, n_prompts: int) -> tuple[Path, Path, float]:
    """A demo-size Qwen2.5-VL whose processor keeps 448x448 images whole, REC prompts, and
    their mean length in tokens (image tokens included)."""
    from vlm_r1.data.jsonl import read_samples
    from vlm_r1.data.shapes import write_shapes
    from vlm_r1.models import load_model
    from vlm_r1.models.tiny import tiny_checkpoint
    from vlm_r1.policy.prompts import prepare_prompt

    model_dir = workdir / "model"
    adapter, model, processor = load_model(str(tiny_checkpoint("qwen2_5_vl", "demo", 0)))
    adapter.set_pixel_bounds(processor, None, image_size * image_size)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    data = Path(
        write_shapes(workdir / "data", n_prompts, 0, 0, str(image_size), ["rec"])["rec_train"]
    )
    lengths = [prepare_prompt(adapter, processor, s).length for s in read_samples(str(data))]
    return model_dir, data, _mean(lengths)


# ------------------------------------------------------------------------------ children
def _per_step(stamps: list[float], mu: int) -> float:
    """Seconds per optimiser step over whole rollout batches after the first one."""
    first = mu - 1  # index of the stamp that ends the first rollout batch
    return (stamps[-1] - stamps[first]) / (len(stamps) - 1 - first)


def run_vlm_r1(args: argparse.Namespace, shared: bool) -> dict:
    from vlm_r1.config import (
        AlgoConfig,
        CheckpointConfig,
        DataConfig,
        LoggingConfig,
        ModelConfig,
        OptimConfig,
        RewardTerm,
        RolloutConfig,
        SpeedConfig,
        TrainConfig,
    )
    from vlm_r1.rl import trainer as grpo

    stamps: list[float] = []
    log = grpo.GRPOTrainer._log

    def stamped(self, *a, **k):
        stamps.append(time.perf_counter())
        return log(self, *a, **k)

    grpo.GRPOTrainer._log = stamped
    out = Path(args.workdir) / f"vlm-r1-{'shared' if shared else 'naive'}-mu{args.mu}"
    config = TrainConfig(
        model=ModelConfig(path=args.model),
        data=DataConfig(train=args.data, shuffle=False),
        rewards=[RewardTerm("accuracy", 1.0, {"method": "rec_iou"}), RewardTerm("format", 1.0)],
        rollout=RolloutConfig(
            num_generations=args.generations, max_completion_length=args.max_completion
        ),
        algo=AlgoConfig(loss_type="grpo", beta=0.04, num_iterations=args.mu),
        optim=OptimConfig(
            prompts_per_step=args.prompts,
            micro_batch_size=args.micro_batch,
            learning_rate=1e-5,
            max_steps=args.mu * (1 + args.batches),
        ),
        checkpoint=CheckpointConfig(output_dir=str(out), save_steps=10**9, resume="none"),
        logging=LoggingConfig(report_to="none", rollout_log_steps=0, progress=False),
        speed=SpeedConfig(
            shared_prefill=shared, share_image_features=shared, share_prompt_prefix=shared
        ),
    ).validate()
    grpo.run_training(config)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    completions = args.prompts * args.generations
    tokens = [(args.prompt_tokens + h["completion_length"]) * completions for h in history]
    return {"seconds_per_step": _per_step(stamps, args.mu), "tokens_per_step": _mean(tokens)}


def run_trl(args: argparse.Namespace) -> dict:
    from transformers import TrainerCallback

    class Stamps(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []

        def on_step_end(self, *a, **k):
            self.stamps.append(time.perf_counter())

    completions = args.prompts * args.generations
    stamps = Stamps()
    trainer = trl_trainer(
        args,
        str(Path(args.workdir) / f"trl-mu{args.mu}"),
        stamps,
        num_iterations=args.mu,
        learning_rate=1e-5,
        max_steps=args.mu * (1 + args.batches),
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    tokens = [(args.prompt_tokens + h["completions/mean_length"]) * completions for h in logs]
    return {"seconds_per_step": _per_step(stamps.stamps, args.mu), "tokens_per_step": _mean(tokens)}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    if args.run == "trl":
        result = run_trl(args)
    else:
        result = run_vlm_r1(args, shared=args.run == "vlm-r1 shared")
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


# -------------------------------------------------------------------------------- parent
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per optimiser step")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--max-completion", type=int, default=64)
    parser.add_argument("--micro-batch", type=int, default=8, help="completions per forward")
    parser.add_argument("--batches", type=int, default=2, help="timed rollout batches per run")
    parser.add_argument("--mu", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--prompt-tokens", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        args.mu = args.mu[0]
        return child(args)

    workdir = Path(tempfile.mkdtemp(prefix="vlm-r1-bench-"))
    try:
        n_prompts = args.prompts * (1 + args.batches) * max(args.mu)
        model, data, prompt_tokens = prepare(workdir, args.image_size, n_prompts)
        args.prompt_tokens = prompt_tokens
        results: dict[tuple[str, int], dict] = {}
        for mu in args.mu:
            for run in RUNS:
                results[run, mu] = _spawn(args, run, mu, model, data, workdir)
                r = results[run, mu]
                print(
                    f"  {run:<14} mu={mu}: {r['seconds_per_step']:.2f} s/step, "
                    f"{r['peak_rss_mb']:.0f} MB peak RSS",
                    flush=True,
                )
        _report(results, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _spawn(args, run: str, mu: int, model: Path, data: Path, workdir: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--run",
        run,
        "--mu",
        str(mu),
        "--model",
        str(model),
        "--data",
        str(data),
        "--workdir",
        str(workdir),
        "--prompts",
        str(args.prompts),
        "--generations",
        str(args.generations),
        "--max-completion",
        str(args.max_completion),
        "--micro-batch",
        str(args.micro_batch),
        "--batches",
        str(args.batches),
        "--prompt-tokens",
        str(args.prompt_tokens),
    ]
    return run_child(command, f"{run!r} (mu={mu})")


def _report(results: dict, args: argparse.Namespace) -> None:
    print(
        f"\nQwen2.5-VL demo size, {args.image_size}x{args.image_size} images, "
        f"{args.prompts} prompts x G={args.generations}, <= {args.max_completion} new tokens, "
        f"beta=0.04, micro-batch {args.micro_batch}"
    )
    print(f"{'run':<16}{'mu':>3}{'s/step':>9}{'tokens/s':>10}{'peak RSS MB':>13}{'vs TRL':>9}")
    for (run, mu), r in results.items():
        trl = results["trl", mu]
        print(
            f"{run:<16}{mu:>3}{r['seconds_per_step']:>9.2f}"
            f"{r['tokens_per_step'] / r['seconds_per_step']:>10.0f}{r['peak_rss_mb']:>13.0f}"
            f"{trl['seconds_per_step'] / r['seconds_per_step']:>8.2f}x"
        )
    mu = args.mu[0]
    ours, trl = results["vlm-r1 shared", mu], results["trl", mu]
    print(
        f"speedup_vs_trl={trl['seconds_per_step'] / ours['seconds_per_step']:.2f} "
        f"memory_vs_trl={ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
