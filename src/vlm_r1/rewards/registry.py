"""Reward registry: name -> reward function, all with one signature.

A reward is ``fn(completions: list[str], solutions: list, **ctx) -> list[float] | RewardOutput``.
``ctx`` holds per-sample lists (``image_paths``, ``box_spaces``, ``problem``, ``task``, ``meta``,
every extra field of the data row...: the table is ``vlm_r1.rl.scoring.reward_context``); a
reward names the keys it needs or takes ``**kwargs`` (``call_arguments``). Hyper-parameters are
bound once from the config (``resolve_reward("rec_acc", threshold=0.5)``), so the trainer never
branches on a reward's name.

Custom rewards: ``"my_pkg.rewards:fn"`` or ``"path/to/file.py:fn"``. They are imported when the
config is resolved, so a typo fails at start-up, not mid-training.

Data is untrusted: a row's ``accu_reward_method`` may name only a registered reward or one the
config declared (``declared_methods``); ``check_data_method`` enforces that without importing
anything, so a dataset can neither run code nor switch on the (networked, keyed) LLM judge.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import logging
import math
import types
import typing
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_r1.errors import UserFacingError

logger = logging.getLogger(__name__)

RewardFn = Callable[..., Any]


class RewardConfigError(UserFacingError, ValueError):
    """A reward name, import path or parameter in the config is wrong."""


class RewardNotAllowed(RewardConfigError):
    """Data named a reward only the config may turn on (custom code, the LLM judge)."""


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

#: Registered rewards that data may not name unless the config declared them: the judge sends
#: answers (and the API key) to a server. ``accuracy`` may never be a per-sample method: it
#: would dispatch to itself.
CONFIG_ONLY = frozenset({"llm_judge"})
NEVER_PER_SAMPLE = frozenset({"accuracy"})

_BUILTIN_MODULES = (
    "format",
    "boxes",
    "points",
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
        close = difflib.get_close_matches(name, [*REWARDS, *VLM_R1_METHODS], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RewardConfigError(
            f"unknown reward {name!r}{hint}; choose one of {', '.join(sorted(REWARDS))}, a VLM-R1 "
            f"method ({', '.join(sorted(VLM_R1_METHODS))}), or 'module:function' / "
            "'file.py:function'"
        )
    return REWARDS[key]


def _canonical(name: str) -> str:
    return VLM_R1_METHODS.get(name, name)


def declared_methods(terms: Sequence[Any]) -> frozenset[str]:
    """What the config lets data name beyond the registered rewards: every custom
    ``module:function`` / ``file.py:function`` and ``llm_judge`` that is a reward term's ``name``
    or the ``method`` of an ``accuracy`` term (``terms``: ``RewardTerm``s)."""
    declared = set()
    for term in terms:
        names = [term.name]
        if _canonical(term.name) == "accuracy":
            names.append(term.params.get("method", "default"))
        for name in names:
            if isinstance(name, str) and (":" in name or _canonical(name) in CONFIG_ONLY):
                declared.add(name if ":" in name else _canonical(name))
    return frozenset(declared)


def check_data_method(name: str, allowed: Collection[str] = ()) -> str:
    """Accept a reward method named by data, or raise; imports nothing.

    Data may name a registered reward or VLM-R1 method name, except ``llm_judge`` (``llm``)
    unless ``allowed`` holds it; and a custom ``module:function`` only if ``allowed`` holds that
    exact string (``allowed``: ``declared_methods`` of the config). ``RewardNotAllowed`` says
    why; an unknown plain name is a ``RewardConfigError``.
    """
    key = name if ":" in name else _canonical(name)
    if key in NEVER_PER_SAMPLE:
        raise RewardNotAllowed(f"{name!r} cannot be a per-sample accuracy method")
    if ":" in name or key in CONFIG_ONLY:
        if key in allowed:
            return key
        what = "llm_judge (a network call with the API key)" if ":" not in name else repr(name)
        raise RewardNotAllowed(
            f"data may not turn on {what}: it is not declared in the config's rewards (only a "
            "reward term's name or accuracy's method can enable custom code or the judge)"
        )
    get_spec(key)  # unknown names fail here, listing the choices
    return key


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
    if spec.builtin:
        _check_parameter_types(spec, params)
    return RewardSpec(
        spec.name, functools.partial(spec.fn, **params), spec.low, spec.high, spec.builtin
    )


def _check_parameter_types(spec: RewardSpec, params: dict[str, Any]) -> None:
    """A built-in reward's parameters must have their annotated types, checked when the config
    is resolved: YAML's ``strict: "false"`` is a non-empty string, which would read as True."""
    hints = typing.get_type_hints(spec.fn)
    for key, value in params.items():
        expected = _expected_type(value, hints.get(key, Any))
        if expected is not None:
            raise RewardConfigError(
                f"reward {spec.name!r} parameter {key!r} must be {expected}, not "
                f"{type(value).__name__} ({value!r})"
            )


def _expected_type(value: Any, hint: Any) -> str | None:
    """``None`` when ``value`` fits ``hint``, else the type it should have, in words. Knows the
    hints built-in rewards use (bool, int, float, str, None, unions, collections of str); any
    other hint accepts everything. An int is a float (YAML writes ``1``), a bool is neither."""
    if hint is Any:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        if all(_expected_type(value, m) is not None for m in members):
            return " | ".join(_type_name(m) for m in members)
        return None
    if typing.get_origin(hint) in (Collection, Sequence, list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        fits = isinstance(value, (list, tuple)) and all(
            _expected_type(v, item) is None for v in value
        )
        return None if fits else f"a list of {_type_name(item)}"
    checks = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        type(None): lambda v: v is None,
    }
    check = checks.get(hint)
    return None if check is None or check(value) else _type_name(hint)


def _type_name(hint: Any) -> str:
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


#: Per reward name: how many None / non-finite / non-numeric scores it has returned so far.
_BAD_SCORES: dict[str, Counter[str]] = {}


def _as_scores(raw: Any, n: int) -> RewardOutput:
    """A reward's return value as a ``RewardOutput``; ``None`` (no scores at all) is n Nones."""
    if raw is None:
        return RewardOutput([None] * n)
    if isinstance(raw, RewardOutput):
        return raw
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise TypeError(f"returned {type(raw).__name__}, not a list of scores")
    return RewardOutput(list(raw))


def _clean(value: Any) -> tuple[float, str | None]:
    """A finite float, or 0.0 and what was wrong (``None``, ``non-numeric``, ``non-finite``)."""
    if value is None:
        return 0.0, "None"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0.0, "non-numeric"
    return (x, None) if math.isfinite(x) else (0.0, "non-finite")


_FILLABLE = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def call_arguments(
    fn: RewardFn, completions: list[str], solutions: list[Any], ctx: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments ``fn`` is called with: each reward gets the part of
    the context its signature asks for, so a reward without ``**kwargs`` still works.

    * Completions and solutions go first, by position (a reward with a single positional
      parameter, such as VLM-R1's ``format_reward(completions, **kwargs)``, gets completions
      only).
    * A parameter **without a default** is filled from the context key of its name
      (``def r(completions, solution, image_paths)``); if the batch has no such key, a
      ``TypeError`` says which keys it has.
    * A parameter **with a default** is a hyper-parameter: the context never fills it, since
      the context carries the row's extra fields, which are untrusted data, and must not set
      a reward's settings (``threshold``, the judge's ``base_url``...). Config-bound parameters
      count as defaulted (``functools.partial``). A row field dropped so is still in
      ``meta``.
    * ``**kwargs`` receives every other context key.

    A callable whose signature cannot be read gets completions, solutions and the whole context.
    """
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some C-implemented callables have no signature
        return (completions, solutions), dict(ctx)
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    takes_args = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    args = (completions, solutions) if takes_args or len(positional) != 1 else (completions,)
    consumed = {p.name for p in positional[: len(args)]}
    named = [p for p in parameters if p.kind in _FILLABLE and p.name not in consumed]
    required = {p.name for p in named if p.default is p.empty}
    missing = sorted(required - ctx.keys())
    if missing:
        raise TypeError(
            f"needs {', '.join(map(repr, missing))}, which the reward context lacks (it has: "
            f"{', '.join(sorted(ctx)) or 'nothing'}); see vlm_r1.rl.scoring.reward_context"
        )
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters)
    defaulted = {p.name for p in named} - required
    kwargs = {
        k: v
        for k, v in ctx.items()
        if k in required or (takes_kwargs and k not in defaulted and k not in consumed)
    }
    return args, kwargs


def call_reward(
    spec: RewardSpec, completions: Sequence[str], solutions: Sequence[Any], **ctx: Any
) -> RewardOutput:
    """Run a reward and sanitise its output: right length, finite floats, never an exception.

    Built-in rewards never raise (they are fuzzed); a custom reward that raises scores 0 for the
    batch. A ``None``, non-numeric or non-finite score counts 0 for its sample and is marked in
    its details (``invalid``); the first time a reward does that, a warning gives its counts so
    far. Training goes on and the problem is visible.
    """
    n = len(completions)
    try:
        args, kwargs = call_arguments(spec.fn, list(completions), list(solutions), ctx)
        output = _as_scores(spec.fn(*args, **kwargs), n)
    except Exception as err:  # custom user code must not kill a multi-hour run
        if spec.builtin:
            raise
        logger.warning(
            "reward %s raised %s: %s; scoring the batch 0", spec.name, type(err).__name__, err
        )
        return RewardOutput([0.0] * n, [{"error": f"{type(err).__name__}: {err}"}] * n)
    if len(output.scores) != n:
        raise RewardConfigError(
            f"reward {spec.name!r} returned {len(output.scores)} scores for {n} completions"
        )
    details = list(output.details) if len(output.details) == n else [{} for _ in range(n)]
    scores: list[float] = []
    bad: Counter[str] = Counter()
    for i, value in enumerate(output.scores):
        x, problem = _clean(value)
        scores.append(x)
        if problem:
            bad[problem] += 1
            details[i] = {**details[i], "invalid": problem}
    if bad:
        first = spec.name not in _BAD_SCORES
        counts = _BAD_SCORES.setdefault(spec.name, Counter())
        counts.update(bad)
        if first:
            logger.warning(
                "reward %s returned invalid scores, counted as 0 (so far: %d None, %d non-finite, "
                "%d non-numeric); this warning is shown once per reward",
                spec.name,
                counts["None"],
                counts["non-finite"],
                counts["non-numeric"],
            )
    return RewardOutput(scores, details)
