"""The math modules import only the standard library, numpy and torch (DESIGN: pure math)."""

import ast
import importlib
import inspect
import sys

import pytest

PURE = ["vlm_r1.models.boxes", "vlm_r1.rewards.box_math", "vlm_r1.rewards.detection_math"]
ALLOWED = {"numpy", "torch", "vlm_r1"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("module", PURE)
def test_math_module_imports(module):
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    for name in names:
        assert name.split(".")[0] in ALLOWED, f"{module} imports {name}"
        if name.startswith("vlm_r1"):
            assert name in PURE, f"{module} imports non-pure {name}"
