"""vLLM rollout backend: a colocated engine on the training GPU (optional extra ``vlm-r1[vllm]``).

Each prompt goes to vLLM once, with its images, and ``n=G`` samples: vLLM encodes the image
and prefills the prompt once per group by construction (its prefix cache shares the blocks).
Before every rollout the trainer's current weights are pushed into the engine
(``load_weights`` on the engine's model, which maps transformers parameter names itself), LoRA
adapters merged first, so samples always come from the policy being trained.

The engine call is the only part that needs a GPU; the request building, the name mapping for
the weight sync and the conversion of vLLM's outputs into a :class:`Rollout` are plain
functions tested on CPU with the engine mocked at this boundary.

vLLM API used (documented in vLLM's offline-inference and sampling-parameter pages): ``LLM``
with ``distributed_executor_backend="external_launcher"`` (one engine per training process, as
TRL's colocate mode), ``LLM.generate`` with ``{"prompt": text, "multi_modal_data": {"image":
[...]}}`` requests and one ``SamplingParams`` per request (``n``, ``seed``, ``stop_token_ids``,
``logit_bias``), and ``RequestOutput.outputs[i].token_ids`` / ``finish_reason``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from vlm_r1.config import ConfigError
from vlm_r1.data.jsonl import load_sample_images
from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.policy.prompts import PreparedPrompt
from vlm_r1.rl.rollout import Rollout, SamplingParams, assemble_rollout

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "rollout.backend=vllm needs vLLM and a CUDA GPU: pip install 'vlm-r1[vllm]'. "
    "On a CPU, or without vLLM, use rollout.backend=hf (the default)."
)


class VLLMUnavailable(ConfigError):
    """``rollout.backend=vllm`` but vLLM is not installed, or there is no GPU for it."""


def require_vllm() -> Any:
    """Import vLLM or raise one clear error (called at trainer start-up, before any work)."""
    try:
        import vllm
    except ImportError as err:
        raise VLLMUnavailable(f"{INSTALL_HINT} (import failed: {err})") from None
    if not torch.cuda.is_available():
        raise VLLMUnavailable(f"{INSTALL_HINT} (no CUDA device is visible)")
    return vllm


# --------------------------------------------------------------------------- weight sync
def vllm_weight_name(name: str) -> str | None:
    """The transformers name vLLM's ``load_weights`` expects for a training parameter, or
    None for parameters that are not part of the served model (LoRA factors).

    Strips wrappers' prefixes (PEFT ``base_model.model.``, activation checkpointing, DDP
    ``module.``) and PEFT's ``.base_layer`` (the merged weight lives there after
    ``merge_adapter``); vLLM maps the remaining transformers names to its own layout.
    """
    if "lora_" in name or ".modules_to_save." in name or "original_module" in name:
        return None
    for prefix in ("module.", "base_model.model."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace("_checkpoint_wrapped_module.", "").replace(".base_layer", "")


@contextmanager
def merged_adapters(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """LoRA adapters merged into the base weights for the duration (no-op without PEFT)."""
    merge = getattr(model, "merge_adapter", None)
    if merge is None:
        yield model
        return
    merge()
    try:
        yield model
    finally:
        model.unmerge_adapter()


def weights_for_vllm(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, param in model.named_parameters():
        target = vllm_weight_name(name)
        if target is not None:
            yield target, param.data


# ------------------------------------------------------------------------------ requests
def sampling_params_for(
    vllm_module: Any,
    params: SamplingParams,
    seed: int,
    eos_token_ids: Sequence[int],
    suppress_token_ids: Sequence[int],
) -> Any:
    """vLLM ``SamplingParams`` for one prompt's group: n=G, seeded per prompt like the HF backend."""
    return vllm_module.SamplingParams(
        n=params.num_generations,
        # vLLM decodes greedily at temperature 0.
        temperature=0.0 if params.greedy else params.temperature,
        top_p=1.0 if params.greedy else params.top_p,
        top_k=params.top_k if params.top_k > 0 and not params.greedy else -1,
        max_tokens=params.max_new_tokens,
        seed=seed,
        stop_token_ids=list(eos_token_ids),
        # A sampled vision placeholder would break the next training forward (see HFRollout).
        logit_bias={int(t): -100.0 for t in suppress_token_ids} or None,
        skip_special_tokens=False,
    )


def build_requests(
    adapter: VLMAdapter, processor: Any, prompts: Sequence[PreparedPrompt]
) -> list[dict[str, Any]]:
    """One vLLM request per prompt: its chat-templated text (``chat_text``, the string its HF
    features were built from, so the run's prompt settings hold here too) and its images
    (each passed once). vLLM tokenizes a text prompt with the tokenizer's special tokens, so
    the ones the tokenizer adds itself (Gemma's ``<bos>``, which the template also writes) are
    taken off the text first: vLLM then reads the token ids the HF features hold."""
    prefix = added_prefix(processor.tokenizer)
    requests = []
    for prompt in prompts:
        if not prompt.chat_text:
            raise ValueError(
                f"prompt of sample {prompt.sample.id!r} has no chat_text: build it with "
                "policy.prompts.prepare_prompt or chat_prompt_text"
            )
        images = load_sample_images(prompt.sample)
        text = prompt.chat_text
        if prefix and text.startswith(prefix):
            text = text[len(prefix) :]
        request: dict[str, Any] = {"prompt": text}
        if images:
            request["multi_modal_data"] = {"image": images}
        requests.append(request)
    return requests


def added_prefix(tokenizer: Any) -> str:
    """The text of the special tokens ``tokenizer`` puts before whatever it encodes ("" for
    Qwen's; ``"<bos>"`` for Gemma's)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    extra = len(full) - len(plain)
    if extra <= 0 or full[extra : extra + len(plain)] != plain:
        return ""
    return tokenizer.decode(full[:extra])


def rollout_from_outputs(
    outputs: Sequence[Any],
    prompts: Sequence[PreparedPrompt],
    group_size: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    processor: Any,
) -> Rollout:
    """vLLM ``RequestOutput``s (one per prompt, ``group_size`` samples each) as a :class:`Rollout`.

    Rows are right-padded; the mask covers each completion up to and including its EOS. A
    sample that stopped on ``max_tokens`` (``finish_reason == "length"``) is truncated.
    """
    if len(outputs) != len(prompts):
        raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
    rows: list[list[int]] = []
    stopped_on_length: list[bool] = []
    for request in outputs:
        if len(request.outputs) != group_size:
            raise ValueError(
                f"vLLM returned {len(request.outputs)} samples for a prompt, expected {group_size}"
            )
        for sample in request.outputs:
            rows.append(list(sample.token_ids))
            stopped_on_length.append(sample.finish_reason == "length")
    return assemble_rollout(
        prompts, group_size, rows, eos_token_ids, pad_token_id, processor, stopped_on_length
    )


# -------------------------------------------------------------------------------- engine
class VLLMRollout:
    """``RolloutBackend`` on a colocated vLLM engine (one per training process)."""

    def __init__(
        self,
        model_path: str,
        adapter: VLMAdapter,
        processor: Any,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        suppress_token_ids: Iterable[int] = (),
        *,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        seed: int = 0,
        vllm_module: Any = None,
    ):
        self.vllm = vllm_module if vllm_module is not None else require_vllm()
        self.adapter = adapter
        self.processor = processor
        self.eos_token_ids = list(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.suppress_token_ids = list(suppress_token_ids)
        self.llm = self.vllm.LLM(
            model=model_path,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            distributed_executor_backend="external_launcher",
            limit_mm_per_prompt={"image": 8},
        )

    def engine_model(self) -> Any:
        """The engine's ``nn.Module`` (the path TRL's colocate mode uses for ``load_weights``)."""
        return self.llm.llm_engine.model_executor.driver_worker.model_runner.model

    def sync_weights(self, model: torch.nn.Module) -> int:
        """Push the policy's current weights into the engine; returns how many tensors were sent."""
        sent = 0
        target = self.engine_model()
        with torch.no_grad(), merged_adapters(model) as merged:
            for name, tensor in weights_for_vllm(merged):
                target.load_weights([(name, tensor)])
                sent += 1
        self.llm.reset_prefix_cache()  # cached blocks were computed with the old weights
        return sent

    def generate(
        self,
        model: Any,
        prompts: Sequence[PreparedPrompt],
        seeds: Sequence[int],
        params: SamplingParams,
    ) -> Rollout:
        self.sync_weights(model)
        requests = build_requests(self.adapter, self.processor, prompts)
        sampling = [
            sampling_params_for(
                self.vllm, params, seed, self.eos_token_ids, self.suppress_token_ids
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        return rollout_from_outputs(
            outputs,
            prompts,
            params.num_generations,
            self.eos_token_ids,
            self.pad_token_id,
            self.processor,
        )
