"""The demo's pretrained base: its recipe, building it, and the copy the package ships.

Why ship one: a base that grounds every expression kind takes thousands of SFT steps (over
an hour on a 2-core CPU), far past the demo's 10-minute budget. The paper
starts from a pretrained hub checkpoint for the same reason. So ``shipped_base/`` holds the
base that ``build_base`` made from the default plan's recipe: its config, tokenizer and
processor, its weights in bfloat16, and ``manifest.json`` with the recipe, the competence it
measured, the weights' SHA-256 and the versions that built it. The demo uses it only when the
manifest's recipe is the plan's (``shipped_base``); any other recipe, or ``--rebuild-base``,
builds the base on this machine (cached). ``scripts/ship_demo_base.py`` rebuilds and replaces
the shipped copy; a unit test fails when the default plan's recipe no longer matches it.

The shipped weights depend on the code that trained them as well as on the recipe: like a hub
checkpoint, they stay as built when the trainer changes later. The manifest says which
versions built them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlm_r1.data.shapes import write_shapes
from vlm_r1.demo.derived import DERIVED, write_derived_splits
from vlm_r1.demo.plan import FAMILY, DemoPlan
from vlm_r1.demo.stages import sft
from vlm_r1.demo.tower import BOX_WEIGHT, TOWER_BATCH, TOWER_LR, TOWER_SCENES, train_tower
from vlm_r1.models.tiny import tiny_checkpoint

#: The base the default plan's recipe built, inside the package.
SHIPPED = Path(__file__).parent / "shipped_base"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def recipe(plan: DemoPlan) -> dict[str, Any]:
    """Everything the base's weights depend on besides the code: the family, the plan's
    pretraining fields and the base seed, as JSON-ready values."""
    return {
        "family": FAMILY,
        "model_size": plan.model_size,
        "image_size": plan.image_size,
        "object_scale": plan.object_scale,
        "n_pretrain": plan.n_pretrain,
        "tower": {
            "steps": plan.pretrain_tower_steps,
            "scenes": list(TOWER_SCENES),
            "batch": TOWER_BATCH,
            "lr": TOWER_LR,
            "box_weight": BOX_WEIGHT,
            "then": "frozen",
        },
        "stages": [[tasks, steps, lr] for tasks, steps, lr in plan.pretrain_stages],
        "derived": {name: [task.source, task.rule] for name, task in DERIVED.items()},
        "batch": plan.pretrain_batch,
        "schedule": "cosine per stage, warmup min(10, steps // 5)",
        "seed": plan.base_seed,
    }


def pretrain_tasks(plan: DemoPlan) -> tuple[str, ...]:
    """The shapes tasks the base's stages train on (a derived task's source in its place, the
    tower's scenes first when there is a tower stage), in order of first use."""
    tasks: list[str] = list(TOWER_SCENES) if plan.pretrain_tower_steps else []
    for names, *_ in plan.pretrain_stages:
        for name in names.split("+"):
            task = DERIVED[name].source if name in DERIVED else name
            tasks += [task] if task not in tasks else []
    return tuple(tasks)


def write_pretraining_data(plan: DemoPlan, data: Path, tasks: tuple[str, ...]) -> None:
    """``tasks``' pretraining rows (``plan.n_pretrain`` each, the base seed) under ``data``,
    and the derived tasks (``derived.py``) whose source is among them, split by split."""
    write_shapes(
        data,
        plan.n_pretrain,
        plan.n_eval,
        plan.base_seed,
        plan.image_size,
        tasks,
        plan.object_scale,
    )
    for name, task in DERIVED.items():
        if task.source in tasks:
            write_derived_splits(data, name, task.source, task.row)


def build_base(plan: DemoPlan, data: Path, staging: Path, resume: bool = False) -> Path:
    """Pretrain the base from a fresh tiny checkpoint: the tower stage when the plan has one
    (``tower.py``; the tower stays frozen after it), then stage by stage
    (``plan.pretrain_stages``: SFT on the ``+``-joined tasks' training rows, mixed by row count,
    at the stage's learning rate with a cosine schedule); returns the last stage's ``final/``.

    ``resume``: continue a build that was killed in ``staging`` (the same plan, into the same
    folders): a finished tower is kept, and each stage goes on from its newest checkpoint
    (``stages.sft``), so the result is the uninterrupted build's."""
    write_pretraining_data(plan, data, pretrain_tasks(plan))
    model = tiny_checkpoint(FAMILY, plan.model_size, plan.base_seed)
    tower = staging / "tower"
    if plan.pretrain_tower_steps and resume and (tower / "final").is_dir():
        model = tower / "final"
    elif plan.pretrain_tower_steps:
        model = train_tower(model, data, tower, plan.pretrain_tower_steps, plan.base_seed)
    for index, (names, steps, lr) in enumerate(plan.pretrain_stages):
        files = ":".join(str(data / f"{task}_train.jsonl") for task in names.split("+"))
        model = sft(
            str(model),
            files,
            staging / f"stage{index}",
            steps,
            plan.pretrain_batch,
            lr,
            plan.base_seed,
            schedule="cosine",
            freeze_vision=plan.freeze_vision,
            resume=resume,
        )
    return model


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_base(plan: DemoPlan, folder: Path = SHIPPED) -> Path | None:
    """The shipped base if it was built from ``plan``'s recipe, else ``None``. A manifest
    that matches but weights that do not (a damaged install) are an error, not a rebuild."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest["recipe"] != recipe(plan):
        return None
    if sha256(folder / WEIGHTS) != manifest["sha256"]:
        raise RuntimeError(
            f"{folder / WEIGHTS} does not match its manifest's SHA-256: reinstall vlm-r1, or "
            "run the demo with --rebuild-base"
        )
    return folder


def ship(checkpoint: Path, plan: DemoPlan, scores: dict[str, Any], folder: Path = SHIPPED) -> Path:
    """Write ``checkpoint`` as the shipped base: every file as it is except the weights, which
    are stored in bfloat16 (half the size; the demo computes in float32), and the manifest."""
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in checkpoint.iterdir():
        if path.is_file() and path.name not in (WEIGHTS, "README.md"):
            shutil.copy2(path, staging / path.name)
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(checkpoint / WEIGHTS).items()}
    save_file(weights, staging / WEIGHTS, metadata={"format": "pt"})
    (staging / WEIGHTS).chmod(0o644)  # safetensors writes 0600: a shared install must read it
    manifest = {
        "recipe": recipe(plan),
        "scores": scores,
        "sha256": sha256(staging / WEIGHTS),
        "built_with": {
            name: metadata.version(name) for name in ("vlm-r1", "torch", "transformers")
        },
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder
