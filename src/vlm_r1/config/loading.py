"""YAML recipes and dotted ``key.sub=value`` overrides -> a validated config dataclass."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from vlm_r1.config.rules import ConfigError, check_choice
from vlm_r1.config.sections import TrainConfig


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in get_args(hint):
            return None
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {hint}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is list:
        (item,) = get_args(hint)
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} must be a list")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        return dict(value)
    if origin is Literal:
        check_choice(value, key, get_args(hint))
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r} must be true or false")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a number")
        try:
            number = (
                float(value)
                if hint is float
                else int(str(value))
                if isinstance(value, str)
                else value
            )
        except ValueError as err:
            raise ConfigError(
                f"{key}={value!r} must be {'an integer' if hint is int else 'a number'}"
            ) from err
        if hint is int and (not isinstance(number, int) or isinstance(number, float)):
            if isinstance(number, float) and number.is_integer():
                return int(number)
            raise ConfigError(f"{key}={value!r} must be an integer")
        return float(number) if hint is float else number
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a string")
        return str(value)
    if hint is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in types_:
            close = difflib.get_close_matches(key, types_, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {full!r}{hint}; valid keys here: {', '.join(types_)}"
            )
        kwargs[key] = _coerce(value, types_[key], full)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        if part.isdigit() and isinstance(node, list):
            node = node[int(part)]
            continue
        child = node.get(part)
        if not isinstance(child, (dict, list)):
            child = {}
            node[part] = child
        node = child
    last = parts[-1]
    if isinstance(node, list) and last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, cls: type = TrainConfig
) -> Any:
    """Load a YAML recipe (optional), apply ``key.sub=value`` overrides, validate, return it."""
    tree: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            tree = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{file}: not valid YAML: {err}") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of sections")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    config = _build(cls, tree, "")
    return config.validate()


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
