"""Walk a config dataclass tree: its numeric keys, and which edge values load."""

import dataclasses
import typing

from vlm_r1.config import ConfigError, load_config

EDGE_VALUES = ("0", "-1", "nan", "inf", "-inf")


def numeric_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of every int/float field (Optional included) of a config tree."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += numeric_keys(hint, f"{prefix}{f.name}.")
            continue
        options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if any(a in (int, float) for a in options):
            keys.append(prefix + f.name)
    return keys


def accepted_edge_values(cls: type) -> list[tuple[str, str]]:
    accepted = []
    for key in numeric_keys(cls):
        for value in EDGE_VALUES:
            try:
                load_config(None, ["data.train=x.jsonl", f"{key}={value}"], cls=cls)
            except ConfigError as err:
                message = str(err)
                assert "\n" not in message, message
                assert key in message, (key, message)
                continue
            accepted.append((key, value))
    return accepted
