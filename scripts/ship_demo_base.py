"""Build the demo's base from the default plan's recipe and ship it with the package.

    .venv/bin/python scripts/ship_demo_base.py WORKDIR

Runs ``demo.base.build_base`` (1 h 39 min on a 2-core CPU), then writes
``src/vlm_r1/demo/shipped_base/`` (``demo.base.ship``) with the shipped weights' scores in its
manifest: Acc@0.5 per expression kind on 200 ``rec_mix`` eval_in rows, on 200 targets named by
colour and shape, and where the boxes land; the share of right yes/no answers on 200 ``match1``
rows. WORKDIR keeps the data and every stage's run folder (metrics.jsonl: the training curves).
The last line is the scores as JSON.

    .venv/bin/python scripts/ship_demo_base.py WORKDIR --resume

builds so that a killed build can be continued (stages save every 250 steps), and continues one
that was killed (the result is the uninterrupted build's); a manifest's ``build_seconds`` then
counts the last invocation alone, and says so.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

from vlm_r1.demo import PLANS
from vlm_r1.demo.base import build_base, ship
from vlm_r1.demo.stages import evaluate, grounding

EVAL_ROWS = 200


def score(model: Path, data: Path, out: Path) -> dict:
    """Acc@0.5 per kind and where the boxes land, on ``rec_mix`` and ``named`` eval_in rows;
    the share of right yes/no answers on ``match1`` eval_in rows."""
    scores: dict = {
        task: grounding(model, data / f"{task}_eval_in.jsonl", out / task, EVAL_ROWS)
        for task in ("rec_mix", "named")
    }
    match1 = evaluate(model, data / "match1_eval_in.jsonl", out / "match1", EVAL_ROWS)
    scores["match1"] = match1["qa"]["accuracy"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue a killed build")
    args = parser.parse_args()
    plan = PLANS["default"]
    data = args.workdir / "data"
    runs = args.workdir / "runs"
    resumed = args.resume and runs.is_dir() and any(runs.iterdir())
    started = time.perf_counter()
    # More eval rows than a demo run scores (n_eval is not part of the recipe).
    final = build_base(replace(plan, n_eval=EVAL_ROWS), data, runs, args.resume)
    build_seconds = round(time.perf_counter() - started)
    trial = ship(final, plan, {}, args.workdir / "shipped_trial")
    scores = {
        "competence": score(trial, data, args.workdir / "eval"),
        "build_seconds": build_seconds,
        **({"build_seconds_counts": "the resumed part only"} if resumed else {}),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    folder = ship(final, plan, scores)
    print(f"shipped to {folder} after {build_seconds} s of pretraining")
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
