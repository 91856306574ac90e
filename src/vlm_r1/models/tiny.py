"""Tiny *real* checkpoints built locally: real config classes, random weights, a tokenizer
trained here, the family's real processor, all written with ``save_pretrained``.

No model hub is reachable on our CI machines, so tests and the demo train these. They load
through exactly the code that loads ``Qwen/Qwen2.5-VL-3B-Instruct`` (``AutoModelForImageTextToText``
and ``AutoProcessor``), so nothing downstream knows it is tiny.

Builds are deterministic for a seed (same seed -> byte-identical weights) and cached in a
content-addressed folder (``tiny_checkpoint``), so a test session builds each one once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vlm_r1.models.adapter import TINY_SIZES, ModelLoadError, TinyRecipe, VLMAdapter
from vlm_r1.models.registry import get_adapter

#: Bump when the recipe or corpus changes so cached checkpoints are rebuilt.
TINY_FORMAT_VERSION = 2  # 2: Qwen3-VL sin-cos vision position embeddings
REASONING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

_COLOURS = [
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "cyan",
    "magenta",
    "white",
    "black",
    "gray",
    "brown",
    "pink",
]
_SHAPES = [
    "circle",
    "square",
    "triangle",
    "star",
    "diamond",
    "hexagon",
    "cross",
    "ellipse",
    "rectangle",
]
_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "in",
    "on",
    "at",
    "to",
    "left",
    "right",
    "top",
    "bottom",
    "above",
    "below",
    "next",
    "beside",
    "between",
    "largest",
    "smallest",
    "biggest",
    "small",
    "big",
    "large",
    "tiny",
    "first",
    "second",
    "third",
    "that",
    "is",
    "not",
    "and",
    "or",
    "with",
    "which",
    "shape",
    "object",
    "image",
    "picture",
    "region",
    "sentence",
    "describes",
    "please",
    "provide",
    "bounding",
    "box",
    "coordinate",
    "detect",
    "following",
    "objects",
    "output",
    "thinking",
    "process",
    "final",
    "answer",
    "json",
    "format",
    "count",
    "how",
    "many",
    "are",
    "there",
    "none",
    "found",
    "I",
    "see",
    "look",
    "again",
    "check",
    "carefully",
    "wait",
    "let",
    "me",
    "verify",
    "so",
    "it",
    "must",
    "be",
    "because",
    "only",
    "one",
    "there",
    "is",
    "candidates",
]


def _corpus(rng: random.Random, n_lines: int = 4000) -> Iterator[str]:
    """Deterministic training text: prompts, reasoning and JSON box answers like the tasks'."""
    for _ in range(n_lines):
        colour, shape = rng.choice(_COLOURS), rng.choice(_SHAPES)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        box = [rng.randint(0, 999) for _ in range(4)]
        yield (
            f"Please provide the bounding box coordinate of the region this sentence describes: "
            f"the {colour} {shape}. {words}"
        )
        yield (
            f"<think>The {colour} {shape} is {rng.choice(_WORDS)} the {rng.choice(_SHAPES)}.</think>"
            f'<answer>```json\n[{{"bbox_2d": [{box[0]}, {box[1]}, {box[2]}, {box[3]}], '
            f'"label": "{colour} {shape}"}}]\n```</answer>'
        )
        yield f'{{"count": {rng.randint(0, 20)}, "answer": "{rng.choice(["yes", "no", "A", "B", "C", "D", "E"])}"}}'


def train_tokenizer(adapter: VLMAdapter, vocab_size: int, seed: int = 0) -> Any:
    """A byte-level BPE tokenizer trained here, wrapped as a transformers fast tokenizer.

    Digits and JSON punctuation are always single tokens (digits are split one by one and
    punctuation is isolated before BPE), so box coordinates tokenize the same way in every
    context; the family's special tokens and the reasoning tags are atomic added tokens.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(adapter.special_tokens))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[0-9]|[\[\]{}:,\"`.]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(REASONING_TOKENS),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(random.Random(seed)), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=adapter.eos_token,
        pad_token=adapter.pad_token,
        extra_special_tokens=adapter.named_special_tokens or None,
        model_max_length=32768,
        padding_side="left",
        chat_template=adapter.chat_template,
    )


def build_tiny(family: str, out: str | os.PathLike, size: str = "test", seed: int = 0) -> Path:
    """Build a tiny checkpoint of ``family`` into ``out`` (model, tokenizer, processor)."""
    if size not in TINY_SIZES:
        raise ModelLoadError(f"unknown tiny size {size!r}; choose one of {sorted(TINY_SIZES)}")
    from transformers import AutoModelForImageTextToText

    adapter = get_adapter(family)
    recipe: TinyRecipe = TINY_SIZES[size]
    tokenizer = train_tokenizer(adapter, recipe.vocab_size, seed)
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in adapter.special_tokens}
    recipe_for_model = TinyRecipe(**{**asdict(recipe), "vocab_size": len(tokenizer)})
    config = adapter.tiny_config(recipe_for_model, token_ids)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    adapter.init_tiny_weights(model)
    model.generation_config.eos_token_id = token_ids[adapter.eos_token]
    model.generation_config.pad_token_id = token_ids[adapter.pad_token]
    model.generation_config.bos_token_id = token_ids[adapter.pad_token]
    processor = adapter.tiny_processor(tokenizer, recipe)
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
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            indent=2,
        )
    )
    return out


def cache_root() -> Path:
    return Path(os.environ.get("VLM_R1_CACHE", Path.home() / ".cache" / "vlm_r1"))


def tiny_checkpoint(family: str, size: str = "test", seed: int = 0) -> Path:
    """A cached tiny checkpoint, built once per (family, size, seed, recipe, library versions)."""
    import tokenizers
    import transformers

    key = json.dumps(
        [
            family,
            size,
            seed,
            TINY_FORMAT_VERSION,
            asdict(TINY_SIZES[size]),
            transformers.__version__,
            tokenizers.__version__,
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
