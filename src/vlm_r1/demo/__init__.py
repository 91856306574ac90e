"""``vlm-r1 demo``: the VLM-R1 paper in miniature, on a CPU.

0. The base: a demo-size Qwen3-VL pretrained on a broad mix (``base.py``; shipped with the
   package, or built here for another recipe): single objects and targets named by colour and
   shape first (the answer format, where things are and what they are), then REC with every
   expression kind in both image styles (``shapes`` task ``rec_mix``). Report the base's
   Acc@0.5 per expression kind against a stated bar (``competence.py``): the paper's claims are
   about post-training a model that already has the skills. Say where its boxes land (the named
   object, another one, none): not finding objects and not reading the words differ.
1. Per seed, from that same base, post-train on a *narrow* REC distribution (attribute and
   relation expressions on flat backgrounds): (a) SFT, (b) GRPO with a binary IoU >= 0.5
   reward and KL to the base, at a matched budget (SFT trains on as many samples as GRPO
   samples completions).
2. Evaluate base, SFT and GRPO in domain and out of domain (reasoning expressions, held-out
   colour-shape pairs, textured backgrounds), and test each pair on the same samples
   (McNemar's exact test). Over several seeds (``--full``), pool them (``pooling.py``).
3. ``--full`` adds the detection ablation: from a base pretrained on detection too, GRPO with a
   plain AP reward vs odLength, with the reward-hacking monitors at the end of training.
4. Write ``metrics.json`` and ``report.html``; print the tables. The numbers are whatever this
   run measured: the verdict lines say plainly what the paired tests found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vlm_r1.data.shapes import write_shapes
from vlm_r1.demo.base import (
    WEIGHTS,
    build_base,
    recipe,
    sha256,
    shipped_base,
    write_pretraining_data,
)
from vlm_r1.demo.competence import competence
from vlm_r1.demo.plan import PLANS, DemoPlan
from vlm_r1.demo.pooling import pool_comparisons, pool_seeds, spread
from vlm_r1.demo.stages import cached_run, evaluate, final_monitors, grounding, grpo, sft
from vlm_r1.demo.verdicts import (
    MODELS,
    PAIRS,
    SPLITS,
    detection_verdict,
    pooled_verdicts,
    rec_metric,
    rec_verdicts,
)
from vlm_r1.eval.compare import compare_predictions
from vlm_r1.report.html import build_report

__all__ = ["PLANS", "DemoPlan", "run_demo"]

#: End-of-training monitors the detection ablation reports (``rl/monitors.py``).
HACKING_MONITORS = (
    "pred_gt_box_ratio",
    "duplicate_box_rate",
    "empty_answer_rate",
    "whole_image_box_rate",
    "well_formed_answer_rate",
)


class _Clock:
    """Seconds per stage, in order."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        spent = time.perf_counter() - self.started - sum(self.laps.values())
        self.laps[name] = round(self.laps.get(name, 0.0) + spent, 1)

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.started, 1)


def _pretrain(
    plan: DemoPlan, data: Path, rebuild: bool = False, say: Callable[[str], None] = print
) -> tuple[Path, Path]:
    """The base and, for the detection ablation, the base pretrained on detection too. The base
    is the shipped one when the plan's recipe built it (``base.py``), else built here; each
    build is cached by the code and the recipe."""
    shipped = None if rebuild else shipped_base(plan)
    if shipped is not None:
        say(f"the base: shipped with vlm-r1 ({shipped})")
        base = shipped
    else:
        say("the base: pretraining it on this machine (cached)")
        base = cached_run(
            "base",
            [recipe(plan)],
            lambda staging: build_base(plan, data, staging, resume=True),
            resumable=True,
        )
    if not plan.ovd_ablation:
        return base, base

    def build_detector(staging: Path) -> Path:
        write_pretraining_data(plan, data, ("ovd",))
        return sft(
            str(base),
            str(data / "ovd_train.jsonl"),
            staging / "ovd",
            plan.ovd_pretrain_steps,
            plan.pretrain_batch,
            plan.ovd_pretrain_lr,
            plan.base_seed,
            schedule="cosine",
            freeze_vision=plan.freeze_vision,
        )

    key = [recipe(plan), plan.ovd_pretrain_steps, plan.ovd_pretrain_lr, sha256(base / WEIGHTS)]
    return base, cached_run("detector", key, build_detector)


def _pretraining_runs(base: Path) -> dict[str, Path]:
    """The pretraining stages' run folders when the base was built here (the shipped base
    comes without its training history)."""
    if base.name != "final":
        return {}
    return {f"pretrain_{stage.name}": stage for stage in sorted(base.parents[1].glob("stage*"))}


def _eval_splits(
    models: dict[str, Path], data: Path, out: Path, plan: DemoPlan
) -> tuple[dict[str, Any], dict[str, Any]]:
    """REC results ``{model: {split: metrics}}`` and paired tests ``{split: {b_vs_a: test}}``."""
    results: dict[str, Any] = {name: {} for name in models}
    for name, path in models.items():
        for split, _ in SPLITS:
            results[name][split] = evaluate(
                path, data / f"rec_{split}.jsonl", out / name / split, plan.n_eval
            )
    comparisons = {
        split: {
            f"{b}_vs_{a}": compare_predictions(
                out / a / split / "predictions.jsonl", out / b / split / "predictions.jsonl"
            ).as_dict()
            for pair in PAIRS
            for b, a in (pair, pair[::-1])
        }
        for split, _ in SPLITS
    }
    return results, comparisons


def _rec_study(
    plan: DemoPlan, seed: int, base: Path, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """One seed: its own narrow post-training and eval data, SFT and GRPO from ``base``."""
    data = out / "data" / f"seed{seed}"
    tasks = ("rec", "ovd") if plan.ovd_ablation else ("rec",)
    write_shapes(data, plan.n_train, plan.n_eval, seed, plan.image_size, tasks, plan.object_scale)
    rec_train = str(data / "rec_train.jsonl")
    samples = plan.budget_prompts * plan.grpo_generations
    say(f"seed {seed}: SFT on narrow REC ({samples} samples)")
    sft_final = sft(
        str(base),
        rec_train,
        out / f"sft_s{seed}",
        samples // plan.sft_batch,
        plan.sft_batch,
        plan.sft_lr,
        seed,
    )
    say(
        f"seed {seed}: GRPO on narrow REC ({plan.budget_prompts} prompts x "
        f"G={plan.grpo_generations}, {plan.grpo_reward}, beta {plan.grpo_beta})"
    )
    grpo_final = grpo(
        str(base),
        rec_train,
        out / f"grpo_s{seed}",
        plan,
        plan.budget_prompts // plan.grpo_prompts_per_step,
        seed,
        plan.grpo_reward,
    )
    say(f"seed {seed}: evaluation in and out of domain")
    models = {"base": base, "sft": sft_final, "grpo": grpo_final}
    results, comparisons = _eval_splits(models, data, out / "eval" / f"seed{seed}", plan)
    return {"seed": seed, "results": results, "comparisons": comparisons}


def _detection_study(
    plan: DemoPlan, seed: int, detector: Path, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """One seed of the ablation: GRPO with AP vs odLength from the detection base."""
    data = out / "data" / f"seed{seed}"
    steps = plan.ovd_prompts // plan.grpo_prompts_per_step
    found: dict[str, Any] = {}
    for name, reward in (("grpo_ap", "ap"), ("grpo_odlength", "od_length")):
        say(f"seed {seed}: detection GRPO with the {reward} reward")
        run = out / f"{name}_s{seed}"
        final = grpo(
            str(detector),
            str(data / "ovd_train.jsonl"),
            run,
            plan,
            steps,
            seed,
            reward,
            plan.ovd_max_completion_length,
        )
        metrics = evaluate(
            final,
            data / "ovd_eval_in.jsonl",
            out / "eval" / f"seed{seed}" / name,
            plan.n_eval,
            plan.ovd_max_completion_length,
        )
        found[name] = {
            "ovd": metrics.get("ovd", {}),
            "monitors": final_monitors(run, HACKING_MONITORS),
        }
    return found


def _pool_detection(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    pooled = {}
    for name in ("grpo_ap", "grpo_odlength"):
        stats = {"mAP": spread([s[name]["ovd"].get("mAP", float("nan")) for s in per_seed])}
        for key in HACKING_MONITORS:
            stats[key] = spread([s[name]["monitors"][key] for s in per_seed])
        pooled[name] = stats
    return pooled


def run_demo(
    out: Path | None = None,
    mode: str = "default",
    seed: int = 0,
    seeds: int | None = None,
    rebuild_base: bool = False,
) -> dict[str, Any]:
    """Run ``mode``'s plan; ``seeds`` overrides how many post-training seeds it runs
    (``seed``, ``seed + 1``, ...), all from one base (``plan.base_seed``): the shipped one
    when it fits the plan, unless ``rebuild_base``."""
    if mode not in PLANS:
        raise ValueError(f"unknown demo mode {mode!r}; choose one of {sorted(PLANS)}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    plan = PLANS[mode] if seeds is None else replace(PLANS[mode], seeds=seeds)
    console = Console()
    out = Path(out or "out/demo")
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    console.rule(f"vlm-r1 demo ({mode})")

    def say(text: str) -> None:
        console.print(f"[bold]>[/] {text}")

    tasks = ("rec_mix",) + (("ovd",) if plan.ovd_ablation else ())
    probe = out / "data" / "base_eval"  # this run's seed: rows to score the base (and detector) on
    write_shapes(probe, 0, plan.n_eval, seed, plan.image_size, tasks, plan.object_scale)
    base, detector = _pretrain(plan, out / "data" / "pretrain", rebuild_base, say)
    clock.lap("pretrain")
    say("the base's competence per expression kind (rec_mix eval_in)")
    scores = grounding(
        base, probe / "rec_mix_eval_in.jsonl", out / "eval" / "base_competence", plan.n_eval
    )
    base_report: dict[str, Any] = {
        "rec_by_kind": scores["by_kind"],
        **competence(scores["by_kind"]),
        "boxes_land_on": scores["boxes_land_on"],
    }
    if plan.ovd_ablation:
        base_report["detector_ovd"] = evaluate(
            detector,
            probe / "ovd_eval_in.jsonl",
            out / "eval" / "detector",
            plan.n_eval,
            plan.ovd_max_completion_length,
        ).get("ovd", {})
    clock.lap("base_eval")

    seeds = [seed + i for i in range(plan.seeds)]
    studies = []
    for s in seeds:
        studies.append(_rec_study(plan, s, base, out, say))
        clock.lap("rec_study")
    pooled = pool_seeds([s["results"] for s in studies], ("rec", "acc@0.5"))
    pooled_miou = pool_seeds([s["results"] for s in studies], ("rec", "miou"))
    pooled_tests = pool_comparisons([s["comparisons"] for s in studies])
    verdicts = []
    for study in studies:
        verdicts += [
            f"seed {study['seed']}, {line}"
            for line in rec_verdicts(study["results"], study["comparisons"])
        ]
    if len(seeds) > 1:
        verdicts += pooled_verdicts(pooled, pooled_tests, len(seeds))
    runs = {
        **_pretraining_runs(base),
        **({"pretrain_detector": detector.parent} if plan.ovd_ablation else {}),
        **{f"{m}_s{s}": out / f"{m}_s{s}" for s in seeds for m in ("sft", "grpo")},
    }
    detection: dict[str, Any] = {}
    if plan.ovd_ablation:
        per_seed = []
        for s in seeds:
            per_seed.append(_detection_study(plan, s, detector, out, say))
            runs.update({f"{m}_s{s}": out / f"{m}_s{s}" for m in ("grpo_ap", "grpo_odlength")})
        detection = {"per_seed": per_seed, "pooled": _pool_detection(per_seed)}
        verdicts.append(
            detection_verdict(
                detection["pooled"], base_report["detector_ovd"].get("mAP", float("nan"))
            )
        )
        clock.lap("detection_study")
    summary = {
        "mode": mode,
        "plan": asdict(plan),
        "seeds": seeds,
        "base": base_report,
        "studies": studies,
        "pooled": {"acc@0.5": pooled, "miou": pooled_miou, "tests": pooled_tests},
        "detection": detection,
        "verdicts": verdicts,
        "timings_seconds": clock.laps,
        "total_seconds": clock.total,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    report = build_report(
        runs,
        out / "report.html",
        _report_tables(summary),
        title=f"vlm-r1 demo ({mode})",
        notes=_notes(summary),
    )
    _print_tables(console, summary)
    console.print(f"total {summary['total_seconds']:.0f} s; report: [bold]{report}[/]")
    return summary


def _notes(summary: dict[str, Any]) -> list[str]:
    base = summary["base"]
    kinds = ", ".join(
        f"{k} {v['acc@0.5']:.2f}" for k, v in base["rec_by_kind"].items() if k != "all"
    )
    verdict = (
        "competent" if base["competent"] else f"below the bar on {', '.join(base['below_bar'])}"
    )
    landing = _landing_line(base)
    return [
        f"base Acc@0.5 by expression kind: {kinds} (bar {base['bar']}: {verdict}).",
        *([landing] if landing else []),
        *summary["verdicts"],
    ]


def _landing_line(base: dict[str, Any]) -> str | None:
    """Where the base's REC boxes land (``competence.where_boxes_land``), as one sentence."""
    if not base.get("boxes_land_on"):
        return None
    shares = ", ".join(f"{k} {v:.0%}" for k, v in base["boxes_land_on"].items())
    return f"the base's boxes land on: {shares}."


def _report_tables(summary: dict[str, Any]) -> dict[str, Any]:
    """The report's evaluation table: each seed's models, then the means over seeds."""
    tables: dict[str, Any] = {}
    for study in summary["studies"]:
        for model, splits in study["results"].items():
            tables[f"{model} (seed {study['seed']})"] = splits
    if len(summary["seeds"]) > 1:
        acc, miou = summary["pooled"]["acc@0.5"], summary["pooled"]["miou"]
        for model in MODELS:
            tables[f"{model} ({len(summary['seeds'])} seeds)"] = {
                split: {
                    "rec": {
                        "acc@0.5 mean": acc[model][split]["mean"],
                        "acc@0.5 sd": acc[model][split]["sd"],
                        "miou mean": miou[model][split]["mean"],
                        "miou sd": miou[model][split]["sd"],
                    }
                }
                for split, _ in SPLITS
            }
    for study, s in zip(summary["detection"].get("per_seed", []), summary["seeds"], strict=False):
        for name, found in study.items():
            tables[f"{name} (seed {s})"] = {"ovd_eval_in": {"ovd": found["ovd"]}}
    return tables


def _print_tables(console: Console, summary: dict[str, Any]) -> None:
    base = summary["base"]
    table = Table(title=f"base Acc@0.5 by expression kind (bar {base['bar']})")
    kinds = list(base["rec_by_kind"])
    for kind in kinds:
        table.add_column(kind)
    table.add_row(*(f"{base['rec_by_kind'][k]['acc@0.5']:.2f}" for k in kinds))
    console.print(table)
    landing = _landing_line(base)
    if landing:
        console.print(landing)
    for study in summary["studies"]:
        table = Table(title=f"seed {study['seed']}: REC Acc@0.5 / mean IoU")
        table.add_column("model")
        for split, _ in SPLITS:
            table.add_column(split)
        for model in MODELS:
            table.add_row(
                model,
                *(
                    f"{rec_metric(study['results'], model, split, 'acc@0.5'):.3f} / "
                    f"{rec_metric(study['results'], model, split, 'miou'):.3f}"
                    for split, _ in SPLITS
                ),
            )
        console.print(table)
    for line in summary["verdicts"]:
        console.print(line)
