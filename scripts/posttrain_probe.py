"""Post-training learning rates for the demo, tuned on a dev seed rather than the eval seeds.

    .venv/bin/python scripts/posttrain_probe.py OUT --seed 100 --sft-lr 5e-4 1e-4 --grpo-lr 1e-4 2e-5

From the shipped base, for each (SFT lr, GRPO lr) pair in order: ``vlm-r1 demo``'s REC study on
seed ``--seed`` (its own narrow post-training rows and eval splits, disjoint from the demo's
seeds 0-2) with ``--eval-rows`` eval rows a split. Prints Acc@0.5 in and out of domain for the
base, SFT and GRPO per pair; the last line is all of them as JSON.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from vlm_r1 import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--sft-lr", type=float, nargs="+", required=True)
    parser.add_argument("--grpo-lr", type=float, nargs="+", required=True)
    args = parser.parse_args()
    if len(args.sft_lr) != len(args.grpo_lr):
        parser.error("give as many --sft-lr as --grpo-lr values (they are taken in pairs)")
    found = {}
    for sft_lr, grpo_lr in zip(args.sft_lr, args.grpo_lr, strict=True):
        name = f"sft{sft_lr:g}_grpo{grpo_lr:g}"
        plan = replace(demo.PLANS["default"], sft_lr=sft_lr, grpo_lr=grpo_lr, n_eval=args.eval_rows)
        demo.PLANS["probe"] = plan
        summary = demo.run_demo(args.out / name, "probe", seed=args.seed)
        results = summary["studies"][0]["results"]
        found[name] = {
            model: {
                split: round(results[model][split]["rec"]["acc@0.5"], 3) for split in results[model]
            }
            for model in results
        }
        print(name, json.dumps(found[name]))
    print(json.dumps(found))


if __name__ == "__main__":
    main()
