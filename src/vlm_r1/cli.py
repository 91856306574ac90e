"""The ``vlm-r1`` command line: thin wrappers that parse arguments and call one function each."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer

from vlm_r1.errors import TrainingInterrupted, UserFacingError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="R1-style reinforcement learning (GRPO) for vision-language models.",
)


#: Exit codes: 0 done; 1 a bug (traceback shown); 2 bad input (one line);
#: 128 + signal number when SIGTERM (143) or SIGINT (130) stopped training after a checkpoint.
EXIT_USER_ERROR = 2


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of input errors too (for bug reports)."
    ),
) -> None:
    """R1-style reinforcement learning (GRPO) for vision-language models."""
    if debug:
        os.environ["VLM_R1_DEBUG"] = "1"


class UserError(UserFacingError):
    """A bad command-line flag or argument: printed as one line, no traceback."""


@app.command("tiny-model")
def tiny_model(
    family: str = typer.Argument(
        ...,
        help="Model family: qwen2_vl, qwen2_5_vl, qwen3_vl, internvl, glm4v, gemma3, "
        "smolvlm, llava_onevision.",
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the checkpoint to."),
    size: str = typer.Option("test", "--size", help="test (~0.25M params) or demo (a few M)."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and tokenizer corpus."),
) -> None:
    """Build a tiny real checkpoint (random weights, local tokenizer, real processor)."""
    from vlm_r1.models.tiny import build_tiny

    path = build_tiny(family, out, size, seed)
    typer.echo(f"wrote {family} ({size}, seed {seed}) to {path}")


@app.command("demo")
def demo(
    out: Path = typer.Option(
        Path("out/demo"), "--out", help="Folder for data, runs, metrics.json, report.html."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="A smaller run (about 3 minutes; used by CI)."
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help=(
            "Three seeds pooled, plus the detection ablation (AP vs odLength reward); about 66"
            " minutes on 2 cores the first time, ~40 once its detection base is cached."
        ),
    ),
    seed: int = typer.Option(0, "--seed", help="The first seed (--full runs seed, +1, +2)."),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, help="Post-training seeds to run and pool (default 1; --full 3)."
    ),
    rebuild_base: bool = typer.Option(
        False,
        "--rebuild-base",
        help="Pretrain the base on this machine (~1 h 40 min on 2 cores) instead of using the one "
        "vlm-r1 ships; cached for later runs.",
    ),
) -> None:
    """The paper in miniature: a pretrained base (shipped with vlm-r1), then narrow SFT vs
    GRPO, evaluated in and out of domain with paired tests."""
    from vlm_r1.demo import run_demo

    if quick and full:
        raise UserError("--quick and --full exclude each other")
    run_demo(out, "quick" if quick else "full" if full else "default", seed, seeds, rebuild_base)


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", help="YAML recipe, e.g. configs/grpo_rec.yaml."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the newest checkpoint (= checkpoint.resume=auto)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete the run already in the output folder and start again."
    ),
) -> None:
    """GRPO training. Extra arguments are overrides: algo.beta=0 optim.max_steps=50 ..."""
    import logging

    from vlm_r1.config import load_config
    from vlm_r1.rl.trainer import run_training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_training(load_config(config, _run_overrides(ctx.args, resume, overwrite)))


def _run_overrides(args: list[str], resume: bool, overwrite: bool) -> list[str]:
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    flags = ["checkpoint.resume=auto"] if resume else []
    return list(args) + flags + (["checkpoint.overwrite=true"] if overwrite else [])


@app.command("sft", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sft(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", help="YAML recipe, e.g. configs/sft_rec.yaml."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete the run already in the output folder and start again."
    ),
) -> None:
    """Supervised fine-tuning (the baseline / warm start). Extra arguments are overrides."""
    import logging

    from vlm_r1.config import load_config
    from vlm_r1.sft import SFTConfig, run_sft

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_sft(load_config(config, _run_overrides(ctx.args, resume, overwrite), cls=SFTConfig))


@app.command("eval")
def evaluate(
    model: str = typer.Option(
        ..., "--model", help="Checkpoint folder, LoRA adapter folder or hub id."
    ),
    data: str = typer.Option(..., "--data", help="JSONL/JSON file(s), ':'-joined."),
    out: Path = typer.Option(None, "--out", help="Folder for predictions.jsonl and metrics.json."),
    image_folders: str = typer.Option(None, "--image-folders", help="Image folder(s), ':'-joined."),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="Prompts per generate call (default: 8 with hf, 256 with vllm).",
    ),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    metric_convention: str = typer.Option(
        "default",
        "--metric-convention",
        help="default (IoU >= 0.5) or vlm-r1 (IoU > 0.5, +1 pixels).",
    ),
    limit: int = typer.Option(
        None, "--limit", help="Evaluate N random samples (seed 42), as VLM-R1 does."
    ),
    family: str = typer.Option(None, "--family", help="Override the detected model family."),
    device: str = typer.Option(
        "auto",
        "--device",
        help="auto (cuda if available), cpu, cuda or cuda:N. Under torchrun each process "
        "takes cuda:LOCAL_RANK.",
    ),
    dtype: str = typer.Option(
        None,
        "--dtype",
        help="float32, bfloat16 or float16 (default: float32 on CPU, bfloat16 on CUDA).",
    ),
    backend: str = typer.Option(
        "hf",
        "--backend",
        help="hf (transformers generate) or vllm (needs pip install 'vlm-r1[vllm]' and a GPU).",
    ),
    prompt_config: Path = typer.Option(
        None,
        "--prompt-config",
        help="YAML/JSON prompt settings (system, templates; or a recipe or run config.json "
        "with a prompt: section). Default: those the training run saved in the model folder "
        "(vlm_r1_prompt.json), else VLM-R1's prompts.",
    ),
    split: str = typer.Option(
        None, "--split", help="hf:... data: the split to read (default: its only split)."
    ),
    columns: str = typer.Option(
        None,
        "--columns",
        help="hf:... data: sample field -> column, as YAML/JSON, e.g. '{problem: question}'.",
    ),
) -> None:
    """Greedy evaluation: REC Acc@0.5 / mIoU, detection mAP, counting / QA accuracy.

    Launched with torchrun or accelerate launch, each process generates a share of the
    samples; the main process scores them all, as one process would, and prints and writes."""
    from vlm_r1.eval.report_table import print_metrics, print_throughput
    from vlm_r1.eval.runner import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        model,
        data,
        out,
        image_folders,
        batch_size,
        max_new_tokens,
        metric_convention,
        limit,
        family,
        device=device,
        dtype=dtype,
        backend=backend,
        prompt_config=prompt_config,
        split=split,
        columns=_column_mapping(columns),
    )
    if metrics is None:  # not the main process of a multi-process launch
        return
    print_metrics(metrics)
    print_throughput(metrics)


def _column_mapping(text: str | None) -> dict[str, str] | None:
    """``--columns`` as a mapping of strings to strings (YAML or JSON), or a one-line error."""
    if text is None:
        return None
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"--columns: not YAML/JSON ({err.__class__.__name__})") from err
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UserError(f"--columns: expected a mapping of field -> column names, got {text!r}")
    return value


@app.command("report")
def report(
    runs: list[Path] = typer.Argument(
        ..., help="Run folders (each with metrics.jsonl, rollouts/)."
    ),
    out: Path = typer.Option(None, "--out", help="HTML file (default: <first run>/report.html)."),
) -> None:
    """A self-contained HTML report: curves (runs overlaid), eval table, rollouts with boxes."""
    import json

    from vlm_r1.report.html import build_report

    for run in runs:
        if not (run / "metrics.jsonl").is_file():
            raise UserError(f"{run} has no metrics.jsonl (is it a vlm-r1 run folder?)")
    eval_file = runs[0] / "eval_metrics.json"
    try:
        evals = json.loads(eval_file.read_text()) if eval_file.is_file() else None
    except json.JSONDecodeError as err:
        raise UserError(f"{eval_file}: not valid JSON ({err.msg}, line {err.lineno})") from err
    path = build_report({r.name: r for r in runs}, out or runs[0] / "report.html", evals)
    typer.echo(str(path))


@app.command("push")
def push(
    run: Path = typer.Argument(..., help="A finished run folder (with final/)."),
    repo: str = typer.Option(..., "--repo", help="Hub model repo id, owner/name."),
    private: bool = typer.Option(
        True, "--private/--public", help="Visibility of the repo if it has to be created."
    ),
) -> None:
    """Upload a run's final model with its model card (final/README.md) to the Hugging Face hub.

    Needs a hub token (`hf auth login` or HF_TOKEN); a run trained before cards were written
    gets one from its config.json first."""
    from vlm_r1.model_card import push_run

    typer.echo(push_run(run, repo, private))


make_data = typer.Typer(no_args_is_help=True, help="Write datasets as VLM-R1 JSONL.")
app.add_typer(make_data, name="make-data")


@make_data.command("shapes")
def make_shapes(
    out: Path = typer.Option(..., "--out", help="Output folder (JSONL files + images/)."),
    n_train: int = typer.Option(2000, "--n-train", help="Training samples per task."),
    n_eval: int = typer.Option(
        200, "--n-eval", help="Samples per task in eval_in and in eval_ood."
    ),
    seed: int = typer.Option(0, "--seed"),
    image_size: str = typer.Option(
        "224", "--image-size", help="N, or MIN..MAX for random sizes (e.g. 112..448)."
    ),
    tasks: str = typer.Option(
        "rec,ovd,count",
        "--tasks",
        help="Comma-separated: rec, ovd, count, locate, point, rec_mix (REC of every kind), "
        "named, rec_negation.",
    ),
    object_scale: float = typer.Option(
        1.0, "--object-scale", help="Multiply object sizes (0.25..3; the demo uses 2)."
    ),
) -> None:
    """The synthetic shapes world: train / eval_in / eval_ood splits per task."""
    import time

    from vlm_r1.data.shapes import write_shapes

    start = time.perf_counter()
    written = write_shapes(
        out,
        n_train,
        n_eval,
        seed,
        image_size,
        [t.strip() for t in tasks.split(",") if t.strip()],
        object_scale,
    )
    for name, path in written.items():
        typer.echo(f"{name:>16}: {path}")
    typer.echo(f"done in {time.perf_counter() - start:.1f} s")


@make_data.command("refcoco")
def make_refcoco(
    refs: Path = typer.Option(
        ...,
        "--refs",
        help="refs(unc).p or refs(umd).p. This file is a Python pickle, and loading a pickle "
        "can run code: pass only a file from a source you trust.",
    ),
    instances: Path = typer.Option(
        ..., "--instances", help="COCO instances.json of the same release"
    ),
    out: Path = typer.Option(..., "--out", help="Output folder"),
    dataset: str = typer.Option(
        "refcoco", "--dataset", help="Name prefix: refcoco, refcoco+, refcocog"
    ),
) -> None:
    """RefCOCO/+/g -> one REC JSONL per split (pass the COCO image folder when training)."""
    from vlm_r1.data.convert.refcoco import convert_refcoco

    for split, path in convert_refcoco(refs, instances, out, dataset).items():
        typer.echo(f"{split:>8}: {path}")


@make_data.command("coco")
def make_coco(
    instances: Path = typer.Option(..., "--instances", help="COCO instances.json"),
    out: Path = typer.Option(..., "--out", help="Output JSONL file"),
    negatives: int = typer.Option(3, "--negatives", help="Absent categories listed per question"),
    seed: int = typer.Option(0, "--seed"),
    reward_method: str = typer.Option(
        "", "--reward-method", help="accu_reward_method to write, e.g. odLength"
    ),
) -> None:
    """COCO detection -> open-vocabulary detection JSONL."""
    from vlm_r1.data.convert.coco import convert_coco

    typer.echo(
        str(convert_coco(instances, out, negatives, seed=seed, reward_method=reward_method or None))
    )


def main() -> None:
    """Console entry point. Input errors (``UserFacingError``: config, data, checkpoint, model
    path, flags) become one red line and exit code 2 (``--debug`` or ``VLM_R1_DEBUG=1`` shows the
    traceback); any other exception is a bug and keeps its traceback (exit 1). A run stopped by
    SIGTERM/SIGINT exits with 128 + the signal number once its checkpoint is written."""
    _quiet_libraries()
    try:
        app()
    except UserFacingError as err:
        if os.environ.get("VLM_R1_DEBUG"):
            raise  # the full traceback, for bug reports
        _fail_quietly(str(err))
    except TrainingInterrupted as stop:
        name = signal.Signals(stop.signum).name
        typer.secho(
            f"stopped by {name} at step {stop.step}; a checkpoint is saved, continue with --resume",
            fg=typer.colors.YELLOW,
            err=True,
        )
        sys.exit(128 + stop.signum)


def _quiet_libraries() -> None:
    """Hide per-file progress bars and advisory warnings from transformers in CLI output."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _fail_quietly(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
