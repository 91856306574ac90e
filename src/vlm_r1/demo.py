"""``vlm-r1 demo``: the VLM-R1 paper in miniature, on a CPU.

0. Build a demo-size Qwen3-VL locally and the shapes world (in-domain and out-of-domain REC).
   Qwen3-VL because its vision tower has absolute position embeddings: built from scratch
   (``models/tiny/position_codes.py``) it learns where objects are within minutes of CPU training;
   Qwen2.5-VL's tower carries position only through rotary attention, and a from-scratch tiny
   one learned box sizes but not box positions in the same budget.
1. Warm start: a short SFT on single-object grounding ("the red circle"), so the model knows
   the answer format and some grounding, as a pretrained VLM does (cached after the first run).
2. From that same start: (a) SFT on the REC training split, (b) GRPO on the same split, with a
   matched budget: SFT trains on as many samples as GRPO samples completions (prompts x G).
3. Evaluate start, SFT and GRPO on ``eval_in`` and ``eval_ood`` (Acc@0.5, mean IoU), and test
   each pair on the same samples (McNemar's exact test, ``eval/compare.py``).
4. ``--full`` adds the detection ablation: GRPO with a plain AP reward vs odLength, and the
   reward-hacking monitors.
5. Write ``metrics.json`` and ``report.html``; print the table. The numbers are whatever this
   run measured: the verdict lines say plainly whether RL beat SFT out of domain.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vlm_r1.config import (
    AlgoConfig,
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    RewardTerm,
    RolloutConfig,
    TrainConfig,
)
from vlm_r1.data.shapes import write_shapes
from vlm_r1.eval.compare import compare_predictions
from vlm_r1.eval.runner import evaluate_checkpoint
from vlm_r1.models.tiny import cache_root, tiny_checkpoint
from vlm_r1.models.tiny.build import source_digest
from vlm_r1.report.html import build_report
from vlm_r1.rl.trainer import run_training
from vlm_r1.sft import SFTConfig, run_sft


@dataclass(frozen=True)
class DemoPlan:
    # Objects twice the default size on 112x112 images (16 image tokens), so each covers a few
    # image tokens. Chosen while the tiny towers could not yet see position (default-size
    # objects were never found then); not re-tuned since the sin-cos position codes.
    image_size: str = "112"
    object_scale: float = 2.0
    n_train: int = 2000
    n_eval: int = 100
    warm_steps: int = 400
    warm_batch: int = 16
    warm_lr: float = 5e-4
    # Matched budget: GRPO trains on budget_prompts x G completions, SFT on as many samples.
    budget_prompts: int = 640
    sft_batch: int = 16
    sft_lr: float = 5e-4
    grpo_prompts_per_step: int = 4
    grpo_generations: int = 8
    grpo_lr: float = 1e-4
    grpo_beta: float = 0.0
    grpo_temperature: float = 1.0
    max_completion_length: int = 40
    # A detection answer lists several labelled boxes: 40 tokens cut it off before </answer>.
    ovd_max_completion_length: int = 96
    ovd_ablation: bool = False
    ovd_prompts: int = 96
    ovd_warm_steps: int = 200


PLANS = {
    "quick": DemoPlan(
        n_train=400,
        n_eval=40,
        warm_steps=60,
        budget_prompts=96,
        grpo_prompts_per_step=4,
        grpo_generations=6,
    ),
    "default": DemoPlan(),
    "full": DemoPlan(ovd_ablation=True),
}
FAMILY = "qwen3_vl"


def _quiet(output: Path) -> dict[str, Any]:
    return {
        "checkpoint": CheckpointConfig(
            output_dir=str(output), save_steps=10**9, resume="none", overwrite=True, keep_last=1
        ),
        "logging": LoggingConfig(report_to="none", rollout_log_steps=0, progress=True),
    }


def _sft(model: str, data: str, out: Path, steps: int, batch: int, lr: float, seed: int) -> Path:
    config = SFTConfig(
        model=ModelConfig(path=model),
        data=DataConfig(train=data),
        optim=OptimConfig(
            prompts_per_step=batch,
            micro_batch_size=batch,
            learning_rate=lr,
            max_steps=steps,
            warmup_steps=min(10, steps // 5),
        ),
        seed=seed,
        **_quiet(out),
    ).validate()
    run_sft(config)
    return out / "final"


def _grpo(
    model: str,
    data: str,
    out: Path,
    plan: DemoPlan,
    steps: int,
    seed: int,
    accuracy: str,
    max_completion_length: int | None = None,
) -> Path:
    base = _quiet(out)
    config = TrainConfig(
        model=ModelConfig(path=model),
        data=DataConfig(train=data),
        rewards=[RewardTerm("accuracy", 1.0, {"method": accuracy}), RewardTerm("format", 0.5)],
        rollout=RolloutConfig(
            num_generations=plan.grpo_generations,
            temperature=plan.grpo_temperature,
            max_completion_length=max_completion_length or plan.max_completion_length,
        ),
        algo=AlgoConfig(loss_type="grpo", beta=plan.grpo_beta),
        optim=OptimConfig(
            prompts_per_step=plan.grpo_prompts_per_step,
            micro_batch_size=16,
            learning_rate=plan.grpo_lr,
            max_steps=steps,
        ),
        checkpoint=base["checkpoint"],
        logging=replace(base["logging"], rollout_log_steps=max(1, steps // 4)),
        seed=seed,
    ).validate()
    run_training(config)
    return out / "final"


def _warm_start(
    model: str, data_dir: Path, plan: DemoPlan, seed: int, tasks: tuple[str, ...], steps: int
) -> Path:
    """A short SFT on ``tasks``; cached by everything that determines it."""
    key = json.dumps(
        [
            source_digest(Path(__file__).parent),  # any vlm_r1 code can change the warm start
            model,
            plan.image_size,
            plan.object_scale,
            plan.n_train,
            steps,
            plan.warm_batch,
            plan.warm_lr,
            seed,
            tasks,
        ]
    )
    cached = cache_root() / "demo" / f"warm-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (cached / "final" / "config.json").is_file():
        return cached / "final"
    data = ":".join(str(data_dir / f"{t}_train.jsonl") for t in tasks)
    staging = cached.with_name(cached.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    _sft(model, data, staging, steps, plan.warm_batch, plan.warm_lr, seed)
    shutil.rmtree(cached, ignore_errors=True)
    staging.rename(cached)
    return cached / "final"


def _evaluate(
    model: Path,
    data_dir: Path,
    task: str,
    out: Path,
    limit: int,
    splits: tuple[str, ...] = ("eval_in", "eval_ood"),
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Greedy eval of ``model`` on ``{task}_{split}.jsonl`` per split (written to ``out/split``)."""
    results = {}
    for split in splits:
        metrics = evaluate_checkpoint(
            str(model),
            str(data_dir / f"{task}_{split}.jsonl"),
            out / split,
            batch_size=20,
            max_new_tokens=max_new_tokens,
            limit=limit,
            progress=False,
        )
        results[split] = {k: v for k, v in metrics.items() if not k.startswith("_")}
    return results


def run_demo(out: Path | None = None, mode: str = "default", seed: int = 0) -> dict[str, Any]:
    if mode not in PLANS:
        raise ValueError(f"unknown demo mode {mode!r}; choose one of {sorted(PLANS)}")
    plan = PLANS[mode]
    console = Console()
    out = Path(out or "out/demo")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)

    console.rule(f"vlm-r1 demo ({mode})")
    tasks = ("rec", "locate", "ovd") if plan.ovd_ablation else ("rec", "locate")
    data_dir = out / "data"
    write_shapes(
        data_dir, plan.n_train, plan.n_eval, seed, plan.image_size, tasks, plan.object_scale
    )
    model = str(tiny_checkpoint(FAMILY, "demo", seed))
    lap("data_and_model")
    console.print("[bold]0.[/] warm start (SFT on single-object grounding; cached)")
    start = _warm_start(model, data_dir, plan, seed, ("locate",), plan.warm_steps)
    lap("warm_start")
    rec_train = str(data_dir / "rec_train.jsonl")
    sft_samples = plan.budget_prompts * plan.grpo_generations
    console.print(f"[bold]1.[/] SFT on REC ({sft_samples} samples)")
    sft = _sft(
        str(start),
        rec_train,
        out / "sft",
        sft_samples // plan.sft_batch,
        plan.sft_batch,
        plan.sft_lr,
        seed,
    )
    lap("sft")
    console.print(
        f"[bold]2.[/] GRPO on REC ({plan.budget_prompts} prompts x G={plan.grpo_generations}"
        " completions)"
    )
    grpo = _grpo(
        str(start),
        rec_train,
        out / "grpo",
        plan,
        plan.budget_prompts // plan.grpo_prompts_per_step,
        seed,
        "rec_iou",
    )
    lap("grpo")
    console.print("[bold]3.[/] evaluation on eval_in and eval_ood")
    results: dict[str, Any] = {
        name: _evaluate(path, data_dir, "rec", out / "eval" / name, plan.n_eval)
        for name, path in (("start", start), ("sft", sft), ("grpo", grpo))
    }
    comparisons = _compare(out / "eval")
    lap("eval")
    runs = {"sft": out / "sft", "grpo": out / "grpo"}
    if plan.ovd_ablation:
        console.print("[bold]4.[/] detection ablation: GRPO with AP vs odLength")
        # The detection runs start from the same model taught the detection answer format too
        # (it otherwise never lists boxes, and both rewards would be 0 everywhere).
        ovd_start = _warm_start(
            str(start), data_dir, plan, seed, ("locate", "ovd"), plan.ovd_warm_steps
        )
        ovd_train = str(data_dir / "ovd_train.jsonl")
        steps = plan.ovd_prompts // plan.grpo_prompts_per_step
        for name, reward in (("grpo_ap", "ap"), ("grpo_odlength", "od_length")):
            path = _grpo(
                str(ovd_start),
                ovd_train,
                out / name,
                plan,
                steps,
                seed,
                reward,
                plan.ovd_max_completion_length,
            )
            results[name] = _evaluate(
                path,
                data_dir,
                "ovd",
                out / "eval" / name,
                plan.n_eval,
                splits=("eval_in",),
                max_new_tokens=plan.ovd_max_completion_length,
            )
            runs[name] = out / name
        lap("ovd_ablation")
    verdicts = _verdicts(results, comparisons)
    summary = {
        "mode": mode,
        "plan": asdict(plan),
        "results": results,
        # Paired McNemar tests on the same eval samples; "b_vs_a" asks "is b better than a?".
        "comparisons": comparisons,
        "sft_improves_on_start_in_domain": comparisons["eval_in"]["sft_vs_start"]["b_is_better"],
        "timings_seconds": timings,
        "total_seconds": round(time.perf_counter() - started, 1),
        "verdicts": verdicts,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out / "grpo" / "eval_metrics.json").write_text(json.dumps(results, indent=2))
    report = build_report(
        runs, out / "report.html", results, title=f"vlm-r1 demo ({mode})", notes=verdicts
    )
    _print_table(console, results, verdicts)
    console.print(f"total {summary['total_seconds']:.0f} s; report: [bold]{report}[/]")
    return summary


def _acc(results: dict[str, Any], model: str, split: str) -> float:
    return float(results.get(model, {}).get(split, {}).get("rec", {}).get("acc@0.5", float("nan")))


def _miou(results: dict[str, Any], model: str, split: str) -> float:
    return float(results.get(model, {}).get(split, {}).get("rec", {}).get("miou", float("nan")))


#: Model pairs the demo compares; each is tested both ways ("is b better than a?").
PAIRS = (("sft", "start"), ("grpo", "start"), ("grpo", "sft"))
NAMES = {"start": "start", "sft": "SFT", "grpo": "GRPO"}


def _compare(eval_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Paired tests between the models' REC predictions, per split: ``[split]["b_vs_a"]``."""
    return {
        split: {
            f"{b}_vs_{a}": compare_predictions(
                eval_dir / a / split / "predictions.jsonl",
                eval_dir / b / split / "predictions.jsonl",
            ).as_dict()
            for pair in PAIRS
            for b, a in (pair, pair[::-1])
        }
        for split in ("eval_in", "eval_ood")
    }


def _pair_verdict(tests: dict[str, dict[str, Any]], b: str, a: str) -> str:
    """``"SFT > start (31 vs 2 samples, p=1e-07)"``, or ``~`` when neither way is significant."""
    for better, worse in ((b, a), (a, b)):
        test = tests[f"{better}_vs_{worse}"]
        if test["b_is_better"]:
            return (
                f"{NAMES[better]} > {NAMES[worse]} ({test['b_only']} vs {test['a_only']} "
                f"samples, p={test['p_value']:.2g})"
            )
    test = tests[f"{b}_vs_{a}"]
    return (
        f"{NAMES[b]} ~ {NAMES[a]} ({test['b_only']} vs {test['a_only']} samples, not significant)"
    )


def _verdicts(results: dict[str, Any], comparisons: dict[str, Any]) -> list[str]:
    """Plain statements of what this run measured: a model is only called better than another
    when a paired exact test on the same samples says so (p < 0.05)."""
    lines = []
    for split, label in (("eval_in", "in domain"), ("eval_ood", "out of domain")):
        acc = {m: _acc(results, m, split) for m in ("start", "sft", "grpo")}
        miou = {m: _miou(results, m, split) for m in ("start", "sft", "grpo")}
        tests = comparisons[split]
        pairs = "; ".join(_pair_verdict(tests, b, a) for b, a in PAIRS)
        lines.append(
            f"{label}: Acc@0.5 start {acc['start']:.3f} / SFT {acc['sft']:.3f} / GRPO {acc['grpo']:.3f}; "
            f"mean IoU {miou['start']:.3f} / {miou['sft']:.3f} / {miou['grpo']:.3f}. {pairs}."
        )
    if "grpo_ap" in results:
        ap = results["grpo_ap"]["eval_in"].get("ovd", {})
        od = results["grpo_odlength"]["eval_in"].get("ovd", {})
        lines.append(
            f"detection: mAP with AP reward {ap.get('mAP', float('nan')):.3f}, with odLength "
            f"{od.get('mAP', float('nan')):.3f}; see the box-count and duplicate monitors in the curves."
        )
    return lines


def _print_table(console: Console, results: dict[str, Any], verdicts: list[str]) -> None:
    table = Table(title="REC Acc@0.5 / mean IoU")
    table.add_column("model")
    for split in ("eval_in", "eval_ood"):
        table.add_column(split)
    for model in ("start", "sft", "grpo"):
        cells = []
        for split in ("eval_in", "eval_ood"):
            rec = results.get(model, {}).get(split, {}).get("rec", {})
            cells.append(
                f"{rec.get('acc@0.5', float('nan')):.3f} / {rec.get('miou', float('nan')):.3f}"
            )
        table.add_row(model, *cells)
    console.print(table)
    for line in verdicts:
        console.print(line)
