"""The rules every config field carries: ``Bounds`` ranges, the number types built from them,
and ``check_fields``, which walks a config tree and checks each field against its annotation
(``Literal`` choices, ``Bounds``, finite numbers), then each section's own ``validate()``."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from vlm_r1.errors import UserFacingError


class ConfigError(UserFacingError, ValueError):
    """A configuration key or value is wrong; the message names it and what is allowed."""


def check_choice(value: Any, key: str, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{key}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
        )


@dataclass(frozen=True)
class Bounds:
    """The interval a numeric field must lie in (``low``/``high`` included unless ``open``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: float, key: str) -> None:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        if not (low_ok and high_ok):
            raise ConfigError(f"{key}={value!r} must be {self.describe()}")

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        return f"{'<' if self.high_open else '<='} {_num(self.high)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


PositiveInt = Annotated[int, Bounds(1)]
NonNegativeInt = Annotated[int, Bounds(0)]
Positive = Annotated[float, Bounds(0, low_open=True)]
NonNegative = Annotated[float, Bounds(0)]
UnitOpen = Annotated[float, Bounds(0, 1, low_open=True, high_open=True)]
Fraction = Annotated[float, Bounds(0, 1, high_open=True)]
Seed = Annotated[int, Bounds(0, 2**32 - 1)]


def check_fields(config: Any, prefix: str = "") -> None:
    """Check every field of a config tree against its annotation: ``Literal`` choices,
    ``Bounds`` ranges, finiteness of every number; then each section's own ``validate()``
    (rules that involve several fields). Raises ``ConfigError`` naming the dotted key."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        key = f"{prefix}{f.name}"
        value = getattr(config, f.name)
        _check_value(value, hints[f.name], key)
    if prefix and hasattr(config, "validate"):
        config.validate()


def _check_value(value: Any, hint: Any, key: str) -> None:
    if dataclasses.is_dataclass(value):
        check_fields(value, key + ".")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            if dataclasses.is_dataclass(item):
                check_fields(item, f"{key}[{i}].")
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    base, bounds = _constraints(hint, value)
    if get_origin(base) is Literal:
        check_choice(value, key, get_args(base))
    for bound in bounds:
        bound.check(value, key)


def _constraints(hint: Any, value: Any) -> tuple[Any, list[Bounds]]:
    """The annotation that applies to ``value`` (``Optional`` unwrapped) and its bounds."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return type(None), []
        options = [a for a in get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else hint
    if get_origin(hint) is Annotated:
        base, *extras = get_args(hint)
        return base, [e for e in extras if isinstance(e, Bounds)]
    return hint, []
