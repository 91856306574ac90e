"""Detection reward speed: vlm-r1's vectorised AP vs VLM-R1's per-sample COCOeval loop.

    python benchmarks/rewards.py [--n 10000] [--seed 0]

Both sides start from the same completion strings and compute COCO mAP@[.5:.95] per sample
(labels -> categories, all scores 1.0, one image). VLM-R1's approach builds a pycocotools
COCO + COCOeval per sample (run once: ~30 s); ours runs ``--repeats`` times and the median
is reported. The last line is ``speedup=<x> max_abs_diff=<y>``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from coco_oracle import pycocotools_ap  # noqa: E402

from vlm_r1.rewards import call_reward, resolve_reward  # noqa: E402

LABELS = ["person", "car", "dog", "chair", "cup"]


def make_cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    completions, solutions = [], []
    for _ in range(n):
        n_gt, n_pred = max(1, int(rng.poisson(5))), int(rng.poisson(8))
        xy = rng.uniform(0, 600, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 200, (n_gt, 2))], axis=1).round(1)
        gt_labels = [str(rng.choice(LABELS[:3])) for _ in range(n_gt)]
        preds, labels = [], []
        for _ in range(n_pred):
            if rng.random() < 0.7:
                j = int(rng.integers(n_gt))
                preds.append((gt[j] + rng.normal(0, 8, 4)).round(1).tolist())
                labels.append(gt_labels[j] if rng.random() < 0.9 else str(rng.choice(LABELS)))
            else:
                p = rng.uniform(0, 700, 2)
                preds.append([*p.round(1), *(p + rng.uniform(10, 150, 2)).round(1)])
                labels.append(str(rng.choice(LABELS)))
        answer = json.dumps(
            [{"bbox_2d": b, "label": lab} for b, lab in zip(preds, labels, strict=True)]
        )
        completions.append(
            f"<think>checking each object</think><answer>```json\n{answer}\n```</answer>"
        )
        solutions.append(
            "```json\n"
            + json.dumps(
                [
                    {"bbox_2d": b.tolist(), "label": lab}
                    for b, lab in zip(gt, gt_labels, strict=True)
                ]
            )
            + "\n```"
        )
    return completions, solutions


def vlm_r1_style(completion: str, solution: str) -> float:
    """Per-sample: parse JSON from the code fences, build COCOeval, read stats[0]."""
    import re

    pattern = r"```json(.*?)```"
    gt = json.loads(re.search(pattern, solution, re.DOTALL).group(1))
    match = re.search(pattern, completion, re.DOTALL)
    pred = json.loads(match.group(1)) if match else []
    if not pred:
        return 0.0
    result = pycocotools_ap(
        [p["bbox_2d"] for p in pred],
        [p["label"] for p in pred],
        [1.0] * len(pred),
        [g["bbox_2d"] for g in gt],
        [g["label"] for g in gt],
    )
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (median reported)")
    args = parser.parse_args()
    completions, solutions = make_cases(args.n, args.seed)

    spec = resolve_reward("ap")
    times = []
    for _ in range(args.repeats):  # ours is cheap to repeat: report the median run
        start = time.perf_counter()
        ours = np.array(call_reward(spec, completions, solutions).scores)
        times.append(time.perf_counter() - start)
    t_ours = float(np.median(times))

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = np.array([vlm_r1_style(c, s) for c, s in zip(completions, solutions, strict=True)])
    t_theirs = time.perf_counter() - start

    diff = float(np.max(np.abs(ours - theirs)))
    print(f"samples:                {args.n}")
    print(f"vlm-r1 (vectorised):    {t_ours:8.3f} s  ({args.n / t_ours:,.0f} samples/s)")
    print(f"per-sample COCOeval:    {t_theirs:8.3f} s  ({args.n / t_theirs:,.0f} samples/s)")
    print(f"mean AP (ours, theirs): {ours.mean():.6f}, {theirs.mean():.6f}")
    print(f"speedup={t_theirs / t_ours:.1f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
