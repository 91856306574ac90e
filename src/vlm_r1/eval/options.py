"""The options of ``vlm-r1 eval``, checked and resolved before anything loads.

A typo in ``--device`` or ``--dtype`` found after a 7B checkpoint has loaded (or, under
``torchrun``, after every process has loaded it) wastes minutes, so every flag is checked here
first and a bad value is a :class:`ConfigError` naming the flag. Resolving ``auto`` and the
per-process GPU is a separate, pure step (the device count is an argument) so that the rules
are testable on a machine without CUDA.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vlm_r1.config import ConfigError
from vlm_r1.config.sections import PromptConfig
from vlm_r1.eval.metrics import CONVENTIONS
from vlm_r1.policy.prompts import PROMPT_FILE, read_prompt_file

DEVICES_HELP = "auto|cpu|cuda|cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
DTYPES = ("float32", "bfloat16", "float16")
BACKENDS = ("hf", "vllm")

#: Prompts per generate call when ``--batch-size`` is left out. HF ``generate`` pads a batch to
#: its longest prompt and decodes until its longest answer, so small batches waste little;
#: vLLM schedules the requests of one call itself (continuous batching), so it wants many.
DEFAULT_BATCH_SIZE = {"hf": 8, "vllm": 256}


def check_eval_options(
    batch_size: int | None,
    max_new_tokens: int,
    limit: int | None,
    convention: str,
    device: str = "auto",
    dtype: str | None = None,
    backend: str = "hf",
) -> None:
    """Refuse impossible ``vlm-r1 eval`` options by their flag name, before anything loads."""
    for flag, value in (("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag}={value} must be >= 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit={limit} must be >= 1 (leave it out to evaluate every sample)")
    if convention not in CONVENTIONS:
        raise ConfigError(
            f"--metric-convention={convention!r} is not allowed; choose one of {CONVENTIONS}"
        )
    if not _DEVICE.fullmatch(device):
        raise ConfigError(f"--device={device!r} is not allowed; choose one of {DEVICES_HELP}")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype={dtype!r} is not allowed; choose one of {DTYPES}")
    if backend not in BACKENDS:
        raise ConfigError(f"--backend={backend!r} is not allowed; choose one of {BACKENDS}")


def cuda_device_count() -> int:
    """GPUs this process can see (0 without a CUDA build or driver); tests replace it."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str, local_rank: int, world_size: int, cuda_count: int) -> str:
    """The concrete device of this process: ``cpu`` or ``cuda:I``.

    ``auto`` is CUDA when a GPU is visible. Under a launch of several processes each takes the
    GPU of its ``LOCAL_RANK`` (one process per GPU, as ``torchrun``/``accelerate`` mean it), so
    a fixed ``cuda:N`` is refused there: every process would pile onto the same GPU.
    """
    if device == "auto":
        device = "cuda" if cuda_count else "cpu"
    if device == "cpu":
        return "cpu"
    if cuda_count == 0:
        raise ConfigError(
            f"--device={device} but no CUDA device is visible (torch.cuda.is_available() is "
            "False: a CPU-only torch build, no driver, or CUDA_VISIBLE_DEVICES hides them); "
            "use --device cpu"
        )
    if device == "cuda":
        if local_rank >= cuda_count:
            raise ConfigError(
                f"--device=cuda: process {local_rank} of this node needs GPU {local_rank}, but "
                f"only {cuda_count} are visible; launch at most {cuda_count} processes per node"
            )
        return f"cuda:{local_rank}"
    index = int(device.split(":")[1])
    if world_size > 1:
        raise ConfigError(
            f"--device={device} names one GPU, but {world_size} processes were launched; use "
            "--device cuda (each process then takes the GPU of its LOCAL_RANK)"
        )
    if index >= cuda_count:
        raise ConfigError(
            f"--device={device}: only {cuda_count} CUDA device(s) are visible "
            f"(cuda:0..cuda:{cuda_count - 1})"
        )
    return device


def default_dtype(device: str) -> str:
    """float32 on CPU: it is what evaluation always used there (so CPU numbers stay comparable
    with earlier runs), and CPUs without bf16 units run half-precision matmuls slower, not
    faster. bfloat16 on CUDA: the dtype the Qwen-VL and InternVL checkpoints are published and
    trained in, at half the memory and several times the float32 speed."""
    return "float32" if device == "cpu" else "bfloat16"


def resolve_prompt(
    prompt_config: PromptConfig | str | Path | None, model_path: str
) -> tuple[PromptConfig, str]:
    """The prompt settings to evaluate with, and where they came from (for ``_meta``).

    ``--prompt-config FILE`` (or settings given in code) wins; else the settings a vlm-r1 run
    saved in the model folder (:data:`~vlm_r1.policy.prompts.PROMPT_FILE`), so a model
    trained with its own prompt is asked the same way; else VLM-R1's prompts (any other
    checkpoint, a hub id). Read and checked before any model loads: a bad file is a
    ``ConfigError`` naming it."""
    if isinstance(prompt_config, PromptConfig):
        prompt_config.validate()
        return prompt_config, "given"
    if prompt_config is not None:
        return read_prompt_file(prompt_config, "--prompt-config"), str(prompt_config)
    saved = Path(model_path).expanduser() / PROMPT_FILE
    if saved.is_file():
        return read_prompt_file(saved, "the model's saved prompt settings"), str(saved)
    return PromptConfig(), "default"
