"""Typed configuration: one dataclass per concern, YAML recipes, dotted CLI overrides.

Every field is documented once, here, and carries its own rule: a ``Literal`` type lists the
choices, a ``Bounds`` annotation the allowed range, and every number must be finite.
``load_config("configs/grpo_rec.yaml", ["algo.beta=0"])`` returns a validated ``TrainConfig``;
a wrong key or value raises ``ConfigError`` naming the key and what is allowed, before any model
is loaded. Defaults follow the VLM-R1 REC recipe (G = 8, beta = 0.04, lr = 1e-6, ...); the
shipped tiny configs scale them to a CPU.
"""

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
