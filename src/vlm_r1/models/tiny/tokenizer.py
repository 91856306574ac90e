"""The tiny checkpoints' tokenizer: byte-level BPE trained here on text shaped like the tasks'.

No hub tokenizer is reachable on our CI machines, so each build trains one (a few seconds) on a
deterministic corpus of grounding prompts, reasoning and JSON box answers; the same seed gives
the same vocabulary, which keeps builds byte-identical.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from vlm_r1.models.tiny.registry import TinyBuilder

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


def train_tokenizer(builder: TinyBuilder, eos_token: str, vocab_size: int, seed: int = 0) -> Any:
    """A byte-level BPE tokenizer trained here, wrapped as a transformers fast tokenizer.

    Digits and JSON punctuation are always single tokens (digits are split one by one and
    punctuation is isolated before BPE), so box coordinates tokenize the same way in every
    context; the family's special tokens and the reasoning tags are atomic added tokens.
    ``eos_token`` is the family adapter's turn end, so a tiny model stops where a real one does.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(builder.special_tokens))
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
        eos_token=eos_token,
        pad_token=builder.pad_token,
        extra_special_tokens=builder.named_special_tokens or None,
        model_max_length=32768,
        padding_side="left",
        chat_template=builder.chat_template,
    )
