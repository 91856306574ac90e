"""The model card (``final/README.md``) of a finished run, and its upload to the Hugging Face hub.

The card is written with the final model, from what the run folder already holds: the saved
config (base model, data, rewards, recipe, launch), the last row of ``metrics.jsonl`` and the
command that ran. A copy of ``final/`` on the hub (``checkpoint.push_to_hub`` at the end of
training, or ``vlm-r1 push`` later) then says how it was made without the run folder.

Uploads go through ``huggingface_hub`` and fail loudly: a run without ``final/``, no token, no
network or a refusal by the hub is a ``PushError`` naming the problem, never a silent skip.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from vlm_r1.config import CheckpointConfig
from vlm_r1.errors import UserFacingError
from vlm_r1.run_folder import CONFIG_FILE, METRICS_FILE
from vlm_r1.tracking import read_jsonl

CARD_FILE = "README.md"
FINAL_DIR = "final"

#: Config sections shown in the card's recipe tables, in this order (those the run has).
RECIPE_SECTIONS = ("algo", "rollout", "optim", "model", "launch")


class PushError(UserFacingError):
    """A run cannot be uploaded: no ``final/``, no hub token, no network, or the hub refused."""


def recipe_of(config: dict[str, Any]) -> str:
    """``grpo`` or ``sft``: only GRPO configs have an ``algo`` section."""
    return "grpo" if "algo" in config else "sft"


def launch_command(argv: list[str]) -> str:
    """The command line as a shell would take it back, the program by its name (``vlm-r1``)
    rather than the absolute path of this machine's virtual environment."""
    if not argv:
        return ""
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def last_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The last logged row of the run's ``metrics.jsonl`` (``step`` included), or None."""
    path = Path(run_dir) / METRICS_FILE
    rows = read_jsonl(path) if path.is_file() else []
    return rows[-1] if rows else None


def _is_hub_id(path: str) -> bool:
    """Whether ``model.path`` names a hub repo (the card's ``base_model`` must be one) rather
    than a folder on this machine."""
    if Path(path).exists():
        return False
    try:
        CheckpointConfig.check_repo_id(path, "model.path")
    except UserFacingError:
        return False
    return True


def _cell(value: Any) -> str:
    """A value as one markdown table cell: numbers compact, text with ``|`` and newlines
    escaped so a path or prompt cannot break the table."""
    if isinstance(value, float):
        text = f"{value:.6g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _front_matter(config: dict[str, Any]) -> str:
    """YAML metadata the hub indexes: library, pipeline, tags, and the base model when it is a
    hub id (the hub rejects a local path there; the body names it either way)."""
    model = config.get("model", {})
    tags = ["vlm-r1", recipe_of(config), "vision-language"]
    if model.get("lora", {}).get("enabled"):
        tags.append("lora")
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",
        "tags": tags,
    }
    if _is_hub_id(str(model.get("path", ""))):
        meta["base_model"] = model["path"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def render_card(config: dict[str, Any], metrics: dict[str, Any] | None, command: str) -> str:
    """The card's markdown: front matter, base model, data, rewards (GRPO), the recipe's
    settings, the final metrics and the command, all from the run's saved config."""
    recipe = recipe_of(config).upper()
    model = config.get("model", {})
    data = config.get("data", {})
    lines = [
        _front_matter(config),
        f"# {recipe} fine-tune of `{model.get('path', '?')}` (vlm-r1)",
        "",
        f"Trained with vlm-r1's {recipe} recipe. The weights are a plain transformers "
        "checkpoint (LoRA adapters merged): load them with "
        "`AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained`.",
        "",
        "## Base model",
        "",
        f"`{model.get('path', '?')}` (family: {model.get('family') or 'detected'})",
        "",
        "## Data",
        "",
    ]
    for file in str(data.get("train", "")).split(":"):
        lines.append(f"- `{file}`")
    for key in ("image_folders", "reward_methods", "max_samples"):
        if data.get(key):
            lines.append(f"- {key}: `{data[key]}`")
    if "rewards" in config:
        lines += ["", "## Rewards", ""]
        terms = [
            (t["name"], t.get("weight", 1.0), t.get("params") or {}) for t in config["rewards"]
        ]
        lines += _table(("reward", "weight", "params"), terms)
    lines += ["", "## Recipe"]
    for section in RECIPE_SECTIONS:
        values = config.get(section)
        if not isinstance(values, dict):
            continue
        shown = {k: v for k, v in values.items() if not (section == "model" and k == "path")}
        lines += ["", f"### {section}", ""] + _table(("setting", "value"), sorted(shown.items()))
    for key in ("seed", "think"):
        if key in config:
            lines += ["", f"{key}: `{config[key]}`"]
    lines += ["", "## Final metrics", ""]
    if metrics:
        step = metrics.get("step", "?")
        rows = sorted((k, v) for k, v in metrics.items() if k != "step")
        lines += [f"At step {step}:", ""] + _table(("metric", "value"), rows)
    else:
        lines.append("No metrics were logged.")
    lines += ["", "## Command", "", "```", command or "(not recorded)", "```", ""]
    return "\n".join(lines)


def write_card(
    folder: Path, config: dict[str, Any], metrics: dict[str, Any] | None, command: str
) -> Path:
    """Write ``folder/README.md`` (the final model's folder, or its staging copy)."""
    path = Path(folder) / CARD_FILE
    path.write_text(render_card(config, metrics, command), encoding="utf-8")
    return path


def card_for_run(run_dir: Path) -> Path:
    """Write the card of a finished run that has none (one trained before cards were written),
    from its ``config.json`` and ``metrics.jsonl``; the command was not recorded then."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PushError(
            f"{run_dir / FINAL_DIR} has no {CARD_FILE} and {config_path} cannot be read to "
            f"write one ({err})"
        ) from err
    return write_card(run_dir / FINAL_DIR, config, last_metrics(run_dir), "")


def commit_message(run_dir: Path) -> str:
    """What the hub commit says: the recipe, the run folder and its last step."""
    run_dir = Path(run_dir)
    try:
        recipe = recipe_of(json.loads((run_dir / CONFIG_FILE).read_text())).upper()
    except (OSError, json.JSONDecodeError):
        recipe = "vlm-r1"
    metrics = last_metrics(run_dir) or {}
    step = f", step {metrics['step']}" if "step" in metrics else ""
    return f"Upload {recipe} model from vlm-r1 run {run_dir.name}{step}"


def push_run(run_dir: Path, repo_id: str, private: bool = True, key: str = "--repo") -> str:
    """Upload ``run_dir/final`` (model, processor, ``README.md`` card) to the hub model repo
    ``repo_id``, creating it (``private``) if needed; returns the repo's URL.

    ``key`` names where ``repo_id`` came from in an error. Every failure is a ``PushError``
    that says what to fix, with the hub's own error as its cause."""
    run_dir = Path(run_dir)
    final = run_dir / FINAL_DIR
    CheckpointConfig.check_repo_id(repo_id, key)
    if not final.is_dir():
        raise PushError(
            f"{final} does not exist: push uploads a finished run's final model (a run writes "
            "final/ when it reaches optim.max_steps)"
        )
    if not (final / CARD_FILE).is_file():
        card_for_run(run_dir)
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HTTPError

    token = get_token()
    if not token:
        raise PushError(
            f"no Hugging Face token to push {final} to {repo_id}: log in with `hf auth login` "
            "or set HF_TOKEN"
        )
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=final,
            commit_message=commit_message(run_dir),
        )
    except (HTTPError, OSError) as err:  # OSError: offline mode, connection refused, local I/O
        raise PushError(f"pushing {final} to the hub repo {repo_id} failed: {err}") from err
    return str(url)


def current_command() -> str:
    """This process's command line (the training command, for the card)."""
    return launch_command(sys.argv)
