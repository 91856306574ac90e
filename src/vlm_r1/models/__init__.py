"""Model families (adapters), box coordinate systems and tiny local checkpoints."""

from vlm_r1.models.adapter import ModelLoadError, VLMAdapter
from vlm_r1.models.registry import detect_adapter, family_names, get_adapter, load_model

__all__ = [
    "ModelLoadError",
    "VLMAdapter",
    "detect_adapter",
    "family_names",
    "get_adapter",
    "load_model",
]
