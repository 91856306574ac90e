"""Tiny *real* checkpoints built locally: real config classes, random weights, a tokenizer
trained here, the family's real processor, all written with ``save_pretrained``.

No model hub is reachable on our CI machines, so tests and the demo train these. They load
through exactly the code that loads ``Qwen/Qwen2.5-VL-3B-Instruct`` (``AutoModelForImageTextToText``
and ``AutoProcessor``), so nothing downstream knows it is tiny; the family adapters
(``models/<family>.py``) know nothing of them either.

Layout: ``recipes`` (sizes), ``registry`` (what one family's build needs, by family name),
``qwen`` / ``internvl`` (the family builders, with ``chat_templates`` and ``position_codes``),
``tokenizer`` (the locally trained tokenizer), ``build`` (the build and its cache).
"""

from vlm_r1.models.tiny.build import TINY_FORMAT_VERSION, build_tiny, cache_root, tiny_checkpoint
from vlm_r1.models.tiny.recipes import TINY_SIZES, TinyRecipe
from vlm_r1.models.tiny.registry import TinyBuilder, get_builder, register_builder
from vlm_r1.models.tiny.tokenizer import REASONING_TOKENS, train_tokenizer

__all__ = [
    "REASONING_TOKENS",
    "TINY_FORMAT_VERSION",
    "TINY_SIZES",
    "TinyBuilder",
    "TinyRecipe",
    "build_tiny",
    "cache_root",
    "get_builder",
    "register_builder",
    "tiny_checkpoint",
    "train_tokenizer",
]
