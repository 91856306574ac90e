"""Detection GRPO settings for the demo's ablation, tried on a dev seed rather than the eval seeds.

    .venv/bin/python scripts/detection_probe.py OUT --detector DIR ap@1e-4 ap@2e-5 od_length@2e-5

``--detector`` is the demo's detection base, a checkpoint folder: after ``vlm-r1 demo --full``
it is ``$VLM_R1_CACHE/demo/detector-*/ovd/final`` (default cache ``~/.cache/vlm_r1``). For each
``REWARD@LR`` in order: ``vlm-r1 demo --full``'s detection GRPO (its steps, batch, KL and
completion budget) on seed ``--seed``'s own ``ovd`` training rows, then a greedy eval on
``--eval-rows`` of its ``ovd`` eval rows. Prints the detection base's scores, then per run the
mAP, AP50, well-formed answer share, boxes per true box, the training accuracy reward over the
first and the last quarter of the steps, and the KL at the last step; the last line is all of
them as JSON.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlm_r1 import demo
from vlm_r1.data.shapes.writer import write_shapes
from vlm_r1.demo.stages import evaluate, grpo
from vlm_r1.tracking import read_jsonl

DETECTION_REWARDS = ("ap", "ap50", "od_length", "detection_weighted")


def run_spec(text: str) -> tuple[str, float]:
    """``REWARD@LR`` -> (reward, learning rate), REWARD one of the detection rewards."""
    reward, _, lr = text.partition("@")
    try:
        rate = float(lr)
    except ValueError:
        rate = float("nan")
    if reward not in DETECTION_REWARDS or not rate > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected REWARD@LR, REWARD one of {', '.join(DETECTION_REWARDS)} and "
            "LR > 0, e.g. ap@1e-4"
        )
    return reward, rate


def scores(model: Path, data: Path, out: Path, rows: int, budget: int) -> dict[str, float]:
    ovd = evaluate(model, data / "ovd_eval_in.jsonl", out, rows, budget)["ovd"]
    true = sum(len(r["gt"]) for r in read_jsonl(out / "predictions.jsonl"))
    found = {k: round(ovd[k], 3) for k in ("mAP", "AP50", "well_formed_rate")}
    return {**found, "boxes_per_true": round(ovd["predictions"] / max(true, 1), 2)}


def training_trend(run: Path) -> dict[str, float]:
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "reward/accuracy" in r]
    quarter = max(1, len(rows) // 4)
    acc = [r["reward/accuracy"] for r in rows]
    return {
        "train_acc_first_quarter": round(sum(acc[:quarter]) / quarter, 3),
        "train_acc_last_quarter": round(sum(acc[-quarter:]) / quarter, 3),
        "kl_last": round(rows[-1].get("kl", float("nan")), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=run_spec, nargs="+", metavar="REWARD@LR")
    parser.add_argument("--detector", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--eval-rows", type=int, default=200)
    args = parser.parse_args()
    if not (args.detector / "config.json").is_file():
        parser.error(f"--detector {args.detector}: not a checkpoint folder (no config.json)")
    plan = demo.PLANS["full"]
    budget = plan.ovd_max_completion_length
    data = args.out / "data"
    write_shapes(
        data, plan.n_train, args.eval_rows, args.seed, plan.image_size, ("ovd",), plan.object_scale
    )
    found: dict[str, Any] = {
        "start": scores(args.detector, data, args.out / "eval" / "start", args.eval_rows, budget)
    }
    print("start", json.dumps(found["start"]), flush=True)
    for reward, lr in args.runs:
        name = f"{reward}@{lr:g}"
        run = args.out / name
        final = grpo(
            str(args.detector),
            str(data / "ovd_train.jsonl"),
            run,
            replace(plan, grpo_lr=lr),
            plan.ovd_prompts // plan.grpo_prompts_per_step,
            args.seed,
            reward,
            budget,
        )
        found[name] = {
            **scores(final, data, args.out / "eval" / name, args.eval_rows, budget),
            **training_trend(run),
        }
        print(name, json.dumps(found[name]), flush=True)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
