"""Typed configuration: the sections (``sections.py``), the rule every field carries and the
walk that checks them (``rules.py``), and YAML recipes with dotted overrides (``loading.py``).
``from vlm_r1.config import TrainConfig, load_config`` is the public surface."""

from vlm_r1.config.loading import load_config, to_dict
from vlm_r1.config.rules import (
    Bounds,
    ConfigError,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Seed,
    UnitOpen,
    check_fields,
)
from vlm_r1.config.sections import (
    AlgoConfig,
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    RewardTerm,
    RolloutConfig,
    SpeedConfig,
    TrainConfig,
)

__all__ = [
    "AlgoConfig",
    "Bounds",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "Fraction",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "NonNegative",
    "NonNegativeInt",
    "OptimConfig",
    "Positive",
    "PositiveInt",
    "RewardTerm",
    "RolloutConfig",
    "Seed",
    "SpeedConfig",
    "TrainConfig",
    "UnitOpen",
    "check_fields",
    "load_config",
    "to_dict",
]
