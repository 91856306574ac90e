"""Pretraining curricula for the demo-size base, outside the demo: what does each one buy?

    .venv/bin/python scripts/pretrain_probe.py OUT --stages locate+named:400,rec_mix+named+locate:800
    .venv/bin/python scripts/pretrain_probe.py OUT --stages ... --freeze-vision
    .venv/bin/python scripts/pretrain_probe.py OUT --stages rec_mix+named+locate:600 --start CKPT
    .venv/bin/python scripts/pretrain_probe.py OUT --stages ... --model layers=8
    .venv/bin/python scripts/pretrain_probe.py OUT --stages ... --question-first
    .venv/bin/python scripts/pretrain_probe.py OUT --stages tower:2000,locate+named:400,... [--tower-boxes]

Each stage is ``task+task:steps``: SFT on those tasks' training rows (mixed by row count), 16
samples a step, cosine schedule within the stage, from the previous stage's checkpoint (the
first from a fresh demo-size Qwen3-VL, or ``--start``). Tasks are the shapes tasks (``named``:
the target named by colour and shape among 2-5 objects, so its Acc@0.5 isolates "what" from
"where") plus these, derived from their scenes:

- ``ident``: the ``locate`` task's single objects asked "What colour and shape is the object?"
  ("purple diamond"). A caption-like signal for what an object is, with nothing to ground.
- ``match``: a ``named`` scene asked "Is there a red square in the image?", about its target
  ("yes") or, every other row, about a pair no object has ("no"), chosen where the scene allows
  so that each word fits some object (a red triangle beside a red square and a blue triangle):
  the words must be matched to the objects together, as REC needs, with a one-word answer.
- ``match1``: the same question about a ``locate`` scene's single object, asked of itself
  ("yes") or of itself with the colour or the shape changed ("no"): the demo base's first
  language stage (``vlm_r1.demo.derived``).
- ``notmatch``: a ``locate`` scene's single object asked a negated match ("Is the object a
  square that is not green?"), yes or no: the "not" alone, on one object.
- ``echo``: a ``named`` row's expression to repeat ("Repeat the colour and the shape named in:
  the red square." -> "red square"), text only.

A ``tower:steps`` stage trains the vision tower and merger alone (``vlm_r1.demo.tower``, the
demo base's first stage): per-token colour and shape heads, with ``--tower-boxes`` also the
object's box; the heads are dropped after.

``--model field=value,...`` starts from a fresh demo-size model with those ``TinyRecipe`` sizes
changed (``layers=8``; ``vision_hidden=256,vision_depth=6,vision_intermediate=768``), built into
OUT/start. ``--question-first`` puts the question before the image in every prompt, training
and scoring alike (the adapter's user turn is replaced in this process only): the image tokens
can then attend to the words.

``negation`` is the demo's (its ``rec_mix`` rows of that kind); ``rec_negation`` the shapes task
of negations only (8,000 rows where ``rec_mix`` has ~600).

The final checkpoint is scored on 100 eval_in rows of ``rec_mix`` (Acc@0.5 per expression kind
and where the boxes land), of ``named`` and of ``rec_negation``, and of ``ident`` (the share of
answers with the right colour word, and with the right shape word), of ``match1``, ``match``
and ``notmatch`` (the share of right yes/no answers; 0.5 is a coin). Data is written once per
``--data`` folder (8,000 training rows a task, seed 0, 112 px, objects at scale 2: the demo's
world). The last line is the scores as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
import zlib
from pathlib import Path

from vlm_r1.config import CheckpointConfig, DataConfig, LoggingConfig, ModelConfig, OptimConfig
from vlm_r1.data.shapes import write_shapes
from vlm_r1.data.shapes.world import COLOURS, SHAPES
from vlm_r1.demo.derived import DERIVED, MATCH_QUESTION, qa_row, write_derived_splits
from vlm_r1.demo.stages import evaluate, grounding
from vlm_r1.demo.tower import train_tower
from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.tiny import build_tiny, tiny_checkpoint
from vlm_r1.models.tiny.recipes import TINY_SIZES, TinyRecipe
from vlm_r1.parsing import extract_answer
from vlm_r1.sft import SFTConfig, run_sft

SHAPES_TASKS = ("locate", "rec_mix", "named", "count", "ovd", "rec_negation")
IDENT_QUESTION = "What colour and shape is the object?"
ECHO_QUESTION = "Repeat the colour and the shape named in: "


def as_ident(row: dict) -> dict:
    """A ``locate`` row (one object) asked for the object's colour and shape."""
    shape, colour = row["objects"][0][:2]
    return qa_row(row, "ident", IDENT_QUESTION, f"{colour} {shape}")


def match_foil(objects: list, rng: random.Random) -> tuple[str, str]:
    """A colour and shape that no object in the scene has together, chosen so that both words
    fit some object where the scene allows it (a red triangle beside a red square and a blue
    triangle), else one word, else neither: only the pair, not one word, tells it apart."""
    present = {(colour, shape) for shape, colour, *_ in objects}
    colours = {colour for colour, _ in present}
    shapes = {shape for _, shape in present}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    for fits in (
        lambda c, s: c in colours and s in shapes,
        lambda c, s: c in colours or s in shapes,
    ):
        near = [pair for pair in absent if fits(*pair)]
        if near:
            return rng.choice(near)
    return rng.choice(absent)


def as_match(row: dict) -> dict:
    """A ``named`` row asked whether its target is there ("yes") or, for every other row, a
    foil (``match_foil``) is ("no")."""
    rng = random.Random(zlib.crc32(row["id"].encode()))
    number = int(row["id"].rsplit("-", 1)[1])
    if number % 2 == 0:
        shape, colour = row["objects"][row["target"]][:2]
        answer = "yes"
    else:
        colour, shape = match_foil(row["objects"], rng)
        answer = "no"
    return qa_row(row, "match", MATCH_QUESTION.format(colour=colour, shape=shape), answer)


def as_notmatch(row: dict) -> dict:
    """A ``locate`` row (one object) asked a negated match, "Is the object a square that is not
    green?" or "... a red shape that is not a circle?": yes when the named word fits and the
    negated one does not; no, every other row, when the negated word is the object's own or the
    named word is changed. The "not" alone, on one object, with a one-word answer."""
    rng = random.Random(zlib.crc32(row["id"].encode()))
    case = int(row["id"].rsplit("-", 1)[1]) % 4
    shape, colour = row["objects"][0][:2]
    other_colour = rng.choice([c for c in COLOURS if c != colour])
    other_shape = rng.choice([s for s in SHAPES if s != shape])
    if rng.random() < 0.5:
        asked = other_shape if case == 3 else shape
        negated = colour if case == 1 else other_colour
        question = f"Is the object a {asked} that is not {negated}? Answer yes or no."
    else:
        asked = other_colour if case == 3 else colour
        negated = shape if case == 1 else other_shape
        question = f"Is the object a {asked} shape that is not a {negated}? Answer yes or no."
    return qa_row(row, "notmatch", question, "yes" if case in (0, 2) else "no")


def as_echo(row: dict) -> dict:
    """A ``named`` row's expression to repeat, colour and shape ("red square"): text only, the
    image plays no part. Meant to train, on its own signal, a head that carries the named words
    to the answer: matching them to the image tokens pays only once such a head exists."""
    shape, colour = row["objects"][row["target"]][:2]
    question = ECHO_QUESTION + row["expression"]["text"] + "."
    return qa_row(row, "echo", question, f"{colour} {shape}")


#: The tasks derived from the shapes tasks' rows, ``{name: (source task, rule)}``: the ones
#: defined here and the demo base's own (``vlm_r1.demo.derived``).
DERIVED_TASKS = {
    "ident": ("locate", as_ident),
    "match": ("named", as_match),
    "echo": ("named", as_echo),
    "notmatch": ("locate", as_notmatch),
    **{name: (task.source, task.row) for name, task in DERIVED.items()},
}


def write_data(folder: Path) -> None:
    """The shapes tasks and every derived one under ``folder``, each written once: a task whose
    last split is there is kept, so a folder from an older probe gains only what it lacks."""
    if not (folder / f"{SHAPES_TASKS[-1]}_eval_ood.jsonl").is_file():
        write_shapes(folder, 8000, 100, 0, "112", SHAPES_TASKS, 2.0)
    for name, (source, rule) in DERIVED_TASKS.items():
        if not (folder / f"{name}_eval_ood.jsonl").is_file():
            write_derived_splits(folder, name, source, rule)


def parse_stages(spec: str) -> list[tuple[list[str], int]]:
    """``"a+b:400,c:800"`` -> ``[(["a", "b"], 400), (["c"], 800)]``, checked before any training."""
    known = (*SHAPES_TASKS, *DERIVED_TASKS, "tower")
    stages = []
    for part in spec.split(","):
        tasks, _, steps = part.partition(":")
        names = [t for t in tasks.split("+") if t]
        unknown = [t for t in names if t not in known]
        alone = "tower" not in names or names == ["tower"]
        if not names or unknown or not alone or not steps.isdigit() or int(steps) < 1:
            raise ValueError(
                f"--stages: {part!r} must be task+task:steps with steps >= 1 and tasks from {known} "
                "(tower alone)"
            )
        stages.append((names, int(steps)))
    return stages


def parse_model(spec: str) -> TinyRecipe:
    """``"layers=8,hidden=384"`` -> the demo recipe with those sizes, checked before any work."""
    demo = TINY_SIZES["demo"]
    changes = {}
    for part in spec.split(","):
        field, _, value = part.partition("=")
        if field not in TinyRecipe.__dataclass_fields__ or not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"--model: {part!r} must be field=N with N >= 1 and field one of "
                f"{', '.join(TinyRecipe.__dataclass_fields__)}"
            )
        changes[field] = int(value)
    return dataclasses.replace(demo, **changes)


def question_first(messages):
    """``messages`` (an adapter's user turn builder) with the text moved before the images."""

    def reordered(self, num_images: int, text: str, system: str = "") -> list[dict]:
        turns = messages(self, num_images, text, system)
        user = turns[-1]["content"]
        user.insert(0, user.pop())  # the text is the turn's last item
        return turns

    return reordered


def train_stage(model: str, files: list[Path], out: Path, steps: int, args) -> str:
    config = SFTConfig(
        model=ModelConfig(path=model, freeze_vision=args.freeze_vision),
        data=DataConfig(train=":".join(map(str, files))),
        optim=OptimConfig(
            prompts_per_step=16,
            micro_batch_size=16,
            learning_rate=args.lr,
            max_steps=steps,
            warmup_steps=10,
            schedule="cosine",
        ),
        checkpoint=CheckpointConfig(
            output_dir=str(out), save_steps=10**9, resume="none", overwrite=True, keep_last=0
        ),
        logging=LoggingConfig(report_to="none", rollout_log_steps=0, progress=False),
        seed=args.seed,
    ).validate()
    run_sft(config)
    return str(out / "final")


def naming_hits(completion: str, truth: str) -> tuple[bool, bool]:
    """Whether an ``ident`` answer names the object's colour, and its shape ("purple diamond")."""
    words = (extract_answer(completion).answer or "").lower().split()
    colour, shape = truth.split()
    return colour in words, shape in words


def score(model: Path, data: Path, out: Path) -> dict:
    scores = {}
    evaluate(model, data / "ident_eval_in.jsonl", out / "eval_ident", 100)
    with open(out / "eval_ident" / "predictions.jsonl", encoding="utf-8") as handle:
        hits = [naming_hits(p["completion"], p["gt"]) for p in map(json.loads, handle)]
    scores["ident"] = {
        "colour": round(sum(c for c, _ in hits) / len(hits), 2),
        "shape": round(sum(s for _, s in hits) / len(hits), 2),
    }
    for task in ("match1", "match", "notmatch"):  # the eval's qa accuracy: the right yes or no
        found = evaluate(model, data / f"{task}_eval_in.jsonl", out / f"eval_{task}", 100)
        scores[task] = round(found["qa"]["accuracy"], 2)
    for task in ("rec_mix", "named", "rec_negation"):
        found = grounding(model, data / f"{task}_eval_in.jsonl", out / f"eval_{task}", 100)
        scores[task] = {kind: round(v["acc@0.5"], 2) for kind, v in found["by_kind"].items()}
        scores[task]["lands"] = {k: round(v, 2) for k, v in (found["boxes_land_on"] or {}).items()}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--stages", required=True, help="task+task:steps,... (see above)")
    parser.add_argument("--data", type=Path, default=None, help="default: OUT/data")
    parser.add_argument("--start", default=None, help="checkpoint to start from")
    parser.add_argument("--freeze-vision", action="store_true")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="demo recipe changes: field=N,...")
    parser.add_argument("--question-first", action="store_true")
    parser.add_argument(
        "--tower-boxes", action="store_true", help="tower stages also regress each token's box"
    )
    args = parser.parse_args()
    try:
        stages = parse_stages(args.stages)
        recipe = parse_model(args.model) if args.model else None
    except ValueError as error:
        parser.error(str(error))
    if recipe and args.start:
        parser.error("--model builds a fresh model; it does not combine with --start")
    if args.question_first:
        VLMAdapter.messages = question_first(VLMAdapter.messages)
    data = args.data or args.out / "data"
    write_data(data)
    if recipe:
        model = str(build_tiny("qwen3_vl", args.out / "start", "demo", args.seed, recipe))
    else:
        model = args.start or str(tiny_checkpoint("qwen3_vl", "demo", args.seed))
    started = time.perf_counter()
    for index, (tasks, steps) in enumerate(stages):
        if tasks == ["tower"]:
            out = args.out / f"stage{index}"
            model = str(train_tower(model, data, out, steps, args.seed, args.tower_boxes))
        else:
            files = [data / f"{task}_train.jsonl" for task in tasks]
            model = train_stage(model, files, args.out / f"stage{index}", steps, args)
        print(
            f"stage {index} {'+'.join(tasks)}:{steps}: {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    print(json.dumps(score(Path(model), data, args.out)))


if __name__ == "__main__":
    main()
