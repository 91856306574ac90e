"""Reward registry: name -> reward function, all with one signature.

A reward is ``fn(completions: list[str], solutions: list, **ctx) -> list[float] | RewardOutput``.
``ctx`` holds per-sample lists (``box_spaces``, ``image_sizes``, ``task``,
``accu_reward_method``, ``completion_lengths``...); a reward takes what it needs and ignores the
rest. Hyper-parameters are bound once from the config (``resolve_reward("rec_acc",
threshold=0.5)``), so the trainer never branches on a reward's name.

Custom rewards: ``"my_pkg.rewards:fn"`` or ``"path/to/file.py:fn"``. They are imported when the
config is resolved, so a typo fails at start-up, not mid-training.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RewardFn = Callable[..., Any]


class RewardConfigError(ValueError):
    """A reward name, import path or parameter in the config is wrong."""


@dataclass
class RewardOutput:
    """Scores plus optional per-sample details (parse status, matched boxes...) for logging."""

    scores: list[float]
    details: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RewardSpec:
    name: str
    fn: RewardFn
    low: float
    high: float
    builtin: bool = True


REWARDS: dict[str, RewardSpec] = {}

#: VLM-R1 ``accu_reward_method`` values -> our reward names, so its data works unchanged.
#: (VLM-R1's early ``map`` returned COCOeval ``stats[1]``, AP50; its later code and this
#: mapping use ``map`` for mAP@[.5:.95] and ``map50`` for AP50.)
VLM_R1_METHODS: dict[str, str] = {
    "default": "default",
    "mcq": "mcq",
    "yes_no": "yes_no",
    "llm": "llm_judge",
    "map": "ap",
    "map50": "ap50",
    "od_ap": "ap",
    "od_ap50": "ap50",
    "odLength": "od_length",
    "weighted_sum": "detection_weighted",
    "math": "math",
    "all_match": "all_match",
}

_BUILTIN_MODULES = (
    "format",
    "boxes",
    "detection",
    "choice",
    "math",
    "text",
    "shaping",
    "judge",
    "dispatch",
)


def register_reward(
    name: str, low: float = 0.0, high: float = 1.0
) -> Callable[[RewardFn], RewardFn]:
    """Decorator: register a built-in reward with its documented output range."""

    def wrap(fn: RewardFn) -> RewardFn:
        REWARDS[name] = RewardSpec(name, fn, low, high)
        return fn

    return wrap


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"vlm_r1.rewards.{module}")


def reward_names() -> list[str]:
    _load_builtins()
    return sorted(REWARDS)


def _import_custom(spec: str) -> RewardFn:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise RewardConfigError(
            f"custom reward {spec!r} must look like 'package.module:function' or 'file.py:function'"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise RewardConfigError(f"custom reward {spec!r}: file {target!r} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"vlm_r1_custom_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise RewardConfigError(f"custom reward {spec!r}: cannot load {target!r} as Python")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # user code: report whatever broke, with its type
            raise RewardConfigError(
                f"custom reward {spec!r}: importing {target!r} failed: {type(err).__name__}: {err}"
            ) from err
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise RewardConfigError(
                f"custom reward {spec!r}: cannot import module {target!r} ({err})"
            ) from err
    fn = getattr(module, attr, None)
    if fn is None:
        raise RewardConfigError(
            f"custom reward {spec!r}: module {target!r} has no function {attr!r}"
        )
    if not callable(fn):
        raise RewardConfigError(f"custom reward {spec!r}: {attr!r} in {target!r} is not callable")
    return fn


def get_spec(name: str) -> RewardSpec:
    """The spec of a built-in name, a VLM-R1 method name, or a custom ``module:function``."""
    _load_builtins()
    if ":" in name:
        return RewardSpec(name, _import_custom(name), -math.inf, math.inf, builtin=False)
    key = VLM_R1_METHODS.get(name, name)
    if key not in REWARDS:
        raise RewardConfigError(
            f"unknown reward {name!r}; choose one of {', '.join(sorted(REWARDS))}, a VLM-R1 method "
            f"({', '.join(sorted(VLM_R1_METHODS))}), or 'module:function' / 'file.py:function'"
        )
    return REWARDS[key]


def resolve_reward(name: str, **params: Any) -> RewardSpec:
    """A spec whose function has ``params`` bound; unknown parameter names fail here."""
    spec = get_spec(name)
    if not params:
        return spec
    signature = inspect.signature(spec.fn)
    accepts_any = (
        any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()) and not spec.builtin
    )
    allowed = [
        p.name
        for p in signature.parameters.values()
        if p.kind is p.KEYWORD_ONLY
        or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("completions", "solutions"))
    ]
    unknown = [k for k in params if k not in allowed]
    if unknown and not accepts_any:
        raise RewardConfigError(
            f"reward {name!r} has no parameter {unknown[0]!r}; its parameters: {', '.join(allowed) or 'none'}"
        )
    return RewardSpec(
        spec.name, functools.partial(spec.fn, **params), spec.low, spec.high, spec.builtin
    )


def call_reward(
    spec: RewardSpec, completions: Sequence[str], solutions: Sequence[Any], **ctx: Any
) -> RewardOutput:
    """Run a reward and sanitise its output: right length, finite floats, never an exception.

    Built-in rewards never raise (they are fuzzed); a custom reward that raises or returns a
    non-finite value scores 0 for that batch/sample, and the failure is logged and recorded
    in the details so training goes on and the problem is visible.
    """
    n = len(completions)
    try:
        raw = spec.fn(list(completions), list(solutions), **ctx)
    except Exception as err:  # custom user code must not kill a multi-hour run
        if spec.builtin:
            raise
        logger.warning(
            "reward %s raised %s: %s; scoring the batch 0", spec.name, type(err).__name__, err
        )
        return RewardOutput([0.0] * n, [{"error": f"{type(err).__name__}: {err}"}] * n)
    output = raw if isinstance(raw, RewardOutput) else RewardOutput(list(raw))
    if len(output.scores) != n:
        raise RewardConfigError(
            f"reward {spec.name!r} returned {len(output.scores)} scores for {n} completions"
        )
    scores: list[float] = []
    for value in output.scores:
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        scores.append(x if math.isfinite(x) else 0.0)
    details = output.details if len(output.details) == n else [{} for _ in range(n)]
    return RewardOutput(scores, details)
