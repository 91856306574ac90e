"""Model families: name -> adapter, and detection of a checkpoint's family from its config.

A model path that looks local (``./x``, ``../x``, ``/x``, ``~/x``, not of the hub form
``owner/name``, or whose first folder exists here) and does not exist fails at once, naming
the path: sending it to the hub would cost tens of seconds of retries and a confusing error.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from vlm_r1.models.adapter import ModelLoadError, VLMAdapter

FAMILIES: dict[str, VLMAdapter] = {}
_FAMILY_MODULES = (
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "internvl",
    "gemma3",
    "smolvlm",
    "glm4v",
    "llava_onevision",
)


def register_family(cls: type[VLMAdapter]) -> type[VLMAdapter]:
    """Class decorator: register one adapter instance under its family name."""
    adapter = cls()
    FAMILIES[adapter.family] = adapter
    return cls


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(f"vlm_r1.models.{module}")


def family_names() -> list[str]:
    _load_families()
    return sorted(FAMILIES)


def get_adapter(family: str) -> VLMAdapter:
    """The adapter registered as ``family``; ``ValueError`` listing the choices otherwise."""
    _load_families()
    if family not in FAMILIES:
        raise ModelLoadError(
            f"unknown model family {family!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[family]


#: Checkpoints whose model code ships with the checkpoint (``trust_remote_code``) rather
#: than with transformers, and what to load instead. vlm-r1 never runs code a checkpoint
#: brings: its forwards, processor and box handling are those of the transformers-native
#: classes, which the adapters and tests are written against.
REMOTE_CODE_ALTERNATIVES = {
    "internvl_chat": (
        "InternVL checkpoints with remote code (e.g. OpenGVLab/InternVL2_5-4B) are not "
        "loaded; use a transformers-native conversion, published with an -hf suffix (e.g. "
        "OpenGVLab/InternVL3-2B-hf, model_type internvl), or convert one with transformers' "
        "models/internvl/convert_internvl_weights_to_hf.py (in its source tree)"
    ),
}


def adapter_for_model_type(model_type: str, source: str) -> VLMAdapter:
    _load_families()
    for adapter in FAMILIES.values():
        if model_type in adapter.model_types:
            return adapter
    if model_type in REMOTE_CODE_ALTERNATIVES:
        raise ModelLoadError(
            f"checkpoint {source!r} has model_type {model_type!r}: "
            f"{REMOTE_CODE_ALTERNATIVES[model_type]}"
        )
    supported = sorted(t for a in FAMILIES.values() for t in a.model_types)
    raise ModelLoadError(
        f"checkpoint {source!r} has model_type {model_type!r}, which vlm-r1 does not support; "
        f"supported model types: {', '.join(supported)}"
    )


def _local_path(source: str) -> Path | None:
    """``source`` as a local path if it is meant as one, else ``None`` (a hub id)."""
    local = Path(source).expanduser()
    if (
        local.exists()
        or local.is_absolute()
        or source.startswith((".", "~"))
        or source.count("/") != 1
        or Path(source.split("/")[0]).is_dir()
    ):
        return local
    return None


def checkpoint_source(path: str | os.PathLike) -> str:
    """A local checkpoint path (``~`` expanded) or a hub id; a local-looking path that does
    not exist is a ``ModelLoadError`` here, before any hub request."""
    source = str(path)
    local = _local_path(source)
    if local is None:
        return source
    if not local.exists():
        why = (
            "it is not a hub id of the form owner/name"
            if source.count("/") != 1 or local.is_absolute() or source.startswith((".", "~"))
            else f"it is read as a local path because the folder {source.split('/')[0]!r} exists"
        )
        raise ModelLoadError(
            f"no checkpoint at {source!r}: no such folder ({local.absolute()}), and {why}"
        )
    return str(local)


def read_model_type(path: str | os.PathLike) -> str:
    """``model_type`` of a local checkpoint folder or a hub id (through the HF cache/hub)."""
    source = checkpoint_source(path)
    local = Path(source)
    if local.exists():
        config_file = local / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(
                f"no checkpoint at {source!r}: the folder has no config.json "
                "(expected a folder written by save_pretrained, or a hub id like Qwen/Qwen2.5-VL-3B-Instruct)"
            )
        try:
            config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelLoadError(f"cannot read {config_file}: {err}") from err
        if "model_type" not in config:
            raise ModelLoadError(f"{config_file} has no 'model_type' field")
        return str(config["model_type"])
    from transformers import AutoConfig

    try:
        return str(AutoConfig.from_pretrained(source).model_type)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"no checkpoint at {source!r}: not a local folder, and the hub could not provide it ({first_line})"
        ) from err


def detect_adapter(path: str | os.PathLike, family: str | None = None) -> VLMAdapter:
    """The adapter for a checkpoint: ``family`` if given, else from its ``model_type``."""
    if family:
        return get_adapter(family)
    return adapter_for_model_type(read_model_type(path), str(path))


def lora_base(path: str | os.PathLike) -> str | None:
    """The base model of a LoRA adapter folder (``adapter_config.json``), else ``None``."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file() or (Path(path) / "config.json").is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{config} does not name its base model (base_model_name_or_path)")
    return str(base)


def load_model(
    path: str | os.PathLike, family: str | None = None, **load_kwargs: Any
) -> tuple[VLMAdapter, Any, Any]:
    """Load ``(adapter, model, processor)`` from a local folder, a hub id, or a LoRA adapter
    folder (loaded on its base model and merged), with clear errors."""
    path = checkpoint_source(path)
    base = lora_base(path)
    if base is None:
        adapter = detect_adapter(path, family)
        model, processor = adapter.load(path, **load_kwargs)
        return adapter, model, processor
    from peft import PeftModel

    base = checkpoint_source(base)
    adapter = detect_adapter(base, family)
    model, processor = adapter.load(base, **load_kwargs)
    model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    if (Path(path) / "processor_config.json").is_file() or (
        Path(path) / "preprocessor_config.json"
    ).is_file():
        processor = adapter.load_processor(
            path, load_kwargs.get("min_pixels"), load_kwargs.get("max_pixels")
        )
    return adapter, model, processor
