"""Imports run one way: each top-level part of ``vlm_r1`` may import only its own layer and
the layers below it. The order is written once, here (docs/architecture.md explains each layer).
A new top-level module must be given a layer before this test passes."""

import ast
from pathlib import Path

import pytest

#: Lowest first. A part may import parts of its own layer and of every layer above it in this
#: list, never of a layer below it here (i.e. higher in the stack).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "config"),  # the user's settings and the error type for their mistakes
    ("parsing", "models"),  # answer text -> structures; model families and box spaces
    ("rewards",),  # verifiable rewards (pure scoring of completions)
    ("data",),  # samples from files, checked against the reward registry
    (
        "policy",
        "checkpoint",
        "model_card",
        "tracking",
        "rollout_images",
        "run_folder",
        "distributed",
        "engine",
    ),  # what every recipe uses
    ("rl", "sft", "eval", "report"),  # recipes: GRPO, SFT, evaluation, the HTML report
    ("demo",),  # the paper in miniature, built from the recipes
    ("cli",),  # the command line
]

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "vlm_r1"


def layer_of(part: str) -> int:
    for index, names in enumerate(LAYERS):
        if part in names:
            return index
    raise KeyError(part)


def part_of(module: str) -> str:
    """``vlm_r1.rl.trainer`` -> ``rl``; ``vlm_r1.config`` -> ``config``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def imports_of(path: Path, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``package`` import in the file, function-level ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == package:
                found += [(node.lineno, f"{package}.{a.name}") for a in node.names]
            elif node.module.startswith(package + "."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith(package + ".")]
    return found


def violations(root: Path, package: str = "vlm_r1") -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] == "__init__.py":
            continue
        source = relative.parts[0].removesuffix(".py")
        try:
            own = layer_of(source)
        except KeyError:
            problems.append(f"{relative}: '{source}' has no layer; add it to LAYERS")
            continue
        for line, module in imports_of(path, package):
            target = part_of(module)
            if target and target != source and layer_of(target) > own:
                problems.append(
                    f"{relative}:{line}: {source} (layer {own}) imports {module} "
                    f"(layer {layer_of(target)}, above it)"
                )
    return problems


def test_imports_run_downward_only():
    problems = violations(PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_upward_import(tmp_path):
    """The checker itself can fail: a config module importing the trainer is reported."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "sections.py").write_text(
        "import os\n\ndef f():\n    from vlm_r1.rl.trainer import GRPOTrainer\n"
    )
    (tmp_path / "rl.py").write_text("from vlm_r1.config import TrainConfig\n")
    problems = violations(tmp_path)
    assert problems == [
        "config/sections.py:4: config (layer 0) imports vlm_r1.rl.trainer (layer 5, above it)"
    ]


def test_every_layer_names_an_existing_part():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "__init__.py"}
    parts = {p for p in parts if not p.startswith(("_", "."))}
    named = {name for layer in LAYERS for name in layer}
    assert named <= parts, named - parts


@pytest.mark.parametrize("name", ["errors", "config"])
def test_the_foundation_imports_nothing_above_it(name):
    """config.py types and checks values; names of rewards and losses are resolved by their
    registries when a recipe starts, so the foundation imports no other part of vlm_r1."""
    root = PACKAGE / name if (PACKAGE / name).is_dir() else PACKAGE / f"{name}.py"
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    for path in files:
        others = {part_of(m) for _, m in imports_of(path, "vlm_r1")} - {name, "errors"}
        assert not others, (path, others)
