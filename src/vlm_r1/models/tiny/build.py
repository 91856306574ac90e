"""Build a tiny checkpoint and keep it in a content-addressed cache.

A build puts the family's real config class (random weights), a tokenizer trained here and the
family's real processor together and writes them with ``save_pretrained``. Builds are
deterministic for a seed (same seed -> byte-identical files), so ``tiny_checkpoint`` can key its
cache on what goes in and a test session builds each checkpoint once.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from vlm_r1.models.adapter import ModelLoadError
from vlm_r1.models.registry import get_adapter
from vlm_r1.models.tiny.recipes import TINY_SIZES, TinyRecipe
from vlm_r1.models.tiny.registry import get_builder
from vlm_r1.models.tiny.tokenizer import train_tokenizer

#: Bump when the recipe or corpus changes so cached checkpoints are rebuilt.
TINY_FORMAT_VERSION = 2  # 2: Qwen3-VL sin-cos vision position embeddings


def build_tiny(
    family: str,
    out: str | os.PathLike,
    size: str = "test",
    seed: int = 0,
    recipe: TinyRecipe | None = None,
) -> Path:
    """Build a tiny checkpoint of ``family`` into ``out`` (model, tokenizer, processor).

    ``recipe`` replaces the sizes of ``size`` (a probe of another model shape: the manifest
    still names ``size``, with the recipe written beside it)."""
    if size not in TINY_SIZES:
        raise ModelLoadError(f"unknown tiny size {size!r}; choose one of {sorted(TINY_SIZES)}")
    from transformers import AutoModelForImageTextToText

    adapter = get_adapter(family)
    builder = get_builder(family)
    recipe = recipe or TINY_SIZES[size]
    tokenizer = train_tokenizer(builder, adapter.eos_token, recipe.vocab_size, seed)
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in builder.special_tokens}
    recipe_for_model = TinyRecipe(**{**asdict(recipe), "vocab_size": len(tokenizer)})
    config = builder.config(recipe_for_model, token_ids)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    builder.init_weights(model)
    model.generation_config.eos_token_id = token_ids[adapter.eos_token]
    model.generation_config.pad_token_id = token_ids[builder.pad_token]
    model.generation_config.bos_token_id = token_ids[builder.pad_token]
    processor = builder.processor(tokenizer, recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "vlm_r1_tiny.json").write_text(
        json.dumps(
            {
                "family": family,
                "size": size,
                "seed": seed,
                "version": TINY_FORMAT_VERSION,
                "recipe": asdict(recipe),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            indent=2,
        )
    )
    return out


def source_digest(*paths: str | os.PathLike) -> str:
    """A digest of the Python sources at ``paths`` (files, or folders searched recursively).

    Part of every cache key that code determines: a cached checkpoint built by older code is
    not reused after the code changes (a version constant alone is forgotten: a change to a
    tiny builder's initialisation once left stale checkpoints in every cache)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("VLM_R1_CACHE", Path.home() / ".cache" / "vlm_r1"))


def tiny_checkpoint(family: str, size: str = "test", seed: int = 0) -> Path:
    """A cached tiny checkpoint, built once per (family, size, seed, recipe, library versions,
    builder and adapter source)."""
    import tokenizers
    import transformers

    adapter_source = inspect.getfile(type(get_adapter(family)))
    key = json.dumps(
        [
            family,
            size,
            seed,
            TINY_FORMAT_VERSION,
            asdict(TINY_SIZES[size]),
            transformers.__version__,
            tokenizers.__version__,
            source_digest(Path(__file__).parent, adapter_source),
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = cache_root() / "tiny" / f"{family}-{size}-s{seed}-{digest}"
    if (target / "vlm_r1_tiny.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_tiny(family, staging, size, seed)
        # If another process won the race its build is identical, so losing is fine.
        with contextlib.suppress(OSError):
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
