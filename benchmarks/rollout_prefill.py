"""Rollout speed: shared-prefill generation vs plain generation of G repeated prompts.

    python benchmarks/rollout_prefill.py [--prompts 4] [--generations 8] [--new-tokens 32] [--image 224]

Same tiny demo-size Qwen2.5-VL, same prompts and seeds on both sides (their completions are
token-identical, see tests/unit/rl/test_shared_prefill.py). Prints seconds per rollout and the
ratio; the last line is ``speedup=<x>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import load_model
from vlm_r1.models.tiny import tiny_checkpoint
from vlm_r1.policy.prompts import prepare_prompt
from vlm_r1.rl.rollout import HFRollout, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    adapter, model, processor = load_model(tiny_checkpoint("qwen2_5_vl", "demo"))
    tokenizer = processor.tokenizer
    with tempfile.TemporaryDirectory() as folder:
        data = write_shapes(
            folder, args.prompts, 0, seed=0, image_size=str(args.image), tasks=["rec"]
        )["rec_train"]
        prompts = [prepare_prompt(adapter, processor, s) for s in read_samples(str(data))]
    params = SamplingParams(args.generations, args.new_tokens)
    seeds = list(range(len(prompts)))
    times = {}
    for shared in (False, True):
        backend = HFRollout(
            processor,
            [tokenizer.convert_tokens_to_ids(adapter.eos_token)],
            tokenizer.pad_token_id,
            adapter.forbidden_token_ids(tokenizer),
            shared_prefill=shared,
        )
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            backend.generate(model, prompts, seeds, params)
            runs.append(time.perf_counter() - start)
        times[shared] = statistics.median(runs)
    print(
        f"prompt tokens: {prompts[0].length}, {args.prompts} prompts x G={args.generations} x {args.new_tokens} tokens"
    )
    print(f"plain generation:          {times[False]:.3f} s")
    print(f"shared-prefill generation: {times[True]:.3f} s")
    print(f"speedup={times[False] / times[True]:.2f}")


if __name__ == "__main__":
    main()
