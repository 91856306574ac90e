"""Greedy evaluation on vLLM (``vlm-r1 eval --backend vllm``; the optional extra ``vlm-r1[vllm]``).

The requests are the training rollout's (:func:`vlm_r1.rl.vllm_rollout.build_requests`: the
family's chat-templated prompt text plus the sample's images), so a prompt means the same to
both backends. Completions are decoded from vLLM's token ids with the checkpoint's processor
exactly as the HF backend decodes its own (``skip_special_tokens=True``), and scored by the
same code, so the backends differ only in the engine that picks the tokens.

What greedy means is matched to HF ``generate(do_sample=False)``, which applies the
checkpoint's ``generation_config.json`` on top of the call: its ``repetition_penalty``
(1.05 for the Qwen2.5-VL instruct models) is passed to vLLM too, vision placeholder tokens are
suppressed (a logit bias of -100, vLLM's floor), and decoding stops on the family's stop ids.

Under ``torchrun`` with several processes each one starts its own engine on the GPU of its
``LOCAL_RANK`` (``distributed_executor_backend="external_launcher"`` with tensor parallel size
1, as the training colocate mode and TRL do), generates its share and hands the texts to the
gather; the engines never talk to each other.

vLLM API used (its offline-inference and sampling-parameter pages): ``LLM(model=, dtype=,
seed=, limit_mm_per_prompt=, distributed_executor_backend=)``, ``LLM.generate(requests,
sampling_params=, use_tqdm=)`` returning one ``RequestOutput`` per request in request order,
``RequestOutput.outputs[0].token_ids``, and ``SamplingParams(n, temperature, max_tokens,
stop_token_ids, logit_bias, repetition_penalty, skip_special_tokens)``. Only the engine needs
a GPU; everything around it is tested on CPU with ``vllm`` faked at that boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlm_r1.config import ConfigError
from vlm_r1.data.jsonl import load_sample_images
from vlm_r1.data.sample import Sample
from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.registry import checkpoint_source, detect_adapter, lora_base
from vlm_r1.policy.prompts import PreparedPrompt
from vlm_r1.rl.vllm_rollout import VLLMUnavailable, build_requests

INSTALL_HINT = (
    "--backend vllm needs vLLM and a CUDA GPU: pip install 'vlm-r1[vllm]'. "
    "On a CPU, or without vLLM, use --backend hf (the default)."
)


def require_vllm() -> Any:
    """The ``vllm`` module, or one clear error with the install command (before any loading)."""
    try:
        import vllm
    except ImportError as err:
        raise VLLMUnavailable(f"{INSTALL_HINT} (import failed: {err})") from None
    return vllm


def check_vllm_device(device: str, resolved: str) -> None:
    """vLLM places its engine itself (``LOCAL_RANK``, inside ``CUDA_VISIBLE_DEVICES``), so it
    runs on CUDA only and cannot be pointed at ``cuda:N`` other than the first visible GPU."""
    if not resolved.startswith("cuda"):
        raise VLLMUnavailable(f"{INSTALL_HINT} (--device resolved to {resolved})")
    if device.startswith("cuda:") and device != "cuda:0":
        raise ConfigError(
            f"--device={device} cannot be honoured by --backend vllm, which places its engine "
            f"itself; choose the GPU with CUDA_VISIBLE_DEVICES={device.split(':')[1]} instead"
        )


def vllm_checkpoint(model_path: str, family: str | None) -> tuple[str, VLMAdapter, Any]:
    """``(source, adapter, processor)`` without loading the model into this process (vLLM
    loads it, on the GPU): the adapter for prompts and box spaces, the processor to decode."""
    source = checkpoint_source(model_path)
    if lora_base(source) is not None:
        raise ConfigError(
            f"--backend vllm serves full checkpoints, and {model_path} is a LoRA adapter "
            "folder; evaluate it with --backend hf (it merges the adapter on load)"
        )
    adapter = detect_adapter(source, family)
    return source, adapter, adapter.load_processor(source)


def repetition_penalty(source: str) -> float:
    """The ``repetition_penalty`` HF ``generate`` would apply for this checkpoint (1.0 when it
    has no ``generation_config.json``, as HF then derives one from the model config)."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(source)
    except OSError:
        return 1.0
    return float(config.repetition_penalty or 1.0)


def engine_kwargs(source: str, dtype: str, world_size: int, max_images: int) -> dict[str, Any]:
    """Arguments of ``vllm.LLM`` for one evaluation engine in a launch of ``world_size``."""
    kwargs: dict[str, Any] = {
        "model": source,
        "dtype": dtype,
        "seed": 0,  # greedy decoding draws nothing; fixed anyway so reruns are comparable
        "limit_mm_per_prompt": {"image": max(1, max_images)},
    }
    if world_size > 1:
        # One engine per launched process, each on the GPU of its LOCAL_RANK, reusing the
        # launch's process group instead of spawning workers of its own.
        kwargs["distributed_executor_backend"] = "external_launcher"
    return kwargs


def greedy_sampling_params(
    vllm_module: Any,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    suppress_token_ids: Sequence[int],
    penalty: float = 1.0,
) -> Any:
    """One answer per prompt, argmax at every step (vLLM decodes greedily at temperature 0)."""
    return vllm_module.SamplingParams(
        n=1,
        temperature=0.0,
        max_tokens=max_new_tokens,
        stop_token_ids=list(eos_token_ids),
        logit_bias={int(t): -100.0 for t in suppress_token_ids} or None,
        repetition_penalty=penalty,
        skip_special_tokens=True,
    )


def scoring_prompt(adapter: VLMAdapter, processor: Any, sample: Sample) -> PreparedPrompt:
    """What scoring needs of a sample (its box space), without the HF model inputs: vLLM
    preprocesses the images itself, so running the HF processor here too would only add its
    resizing and patching to every sample, on the CPU, while the GPU waits."""
    images = load_sample_images(sample)
    spaces = tuple(adapter.box_space(processor, image.size) for image in images)
    return PreparedPrompt(
        sample,
        {},
        spaces[0] if spaces else None,
        images[0].size if images else None,
        adapter,
        image_spaces=spaces,
    )


class VLLMGreedyGenerator:
    """``Generate`` on a vLLM engine: prepared prompts in, completion texts out, in order."""

    def __init__(
        self,
        llm: Any,
        vllm_module: Any,
        adapter: VLMAdapter,
        processor: Any,
        max_new_tokens: int,
        penalty: float = 1.0,
    ):
        tokenizer = processor.tokenizer
        self.llm = llm
        self.adapter = adapter
        self.processor = processor
        self.params = greedy_sampling_params(
            vllm_module,
            max_new_tokens,
            adapter.stop_token_ids(tokenizer),
            adapter.forbidden_token_ids(tokenizer),
            penalty,
        )
        self.generated_tokens = 0

    @classmethod
    def start(
        cls,
        vllm_module: Any,
        source: str,
        adapter: VLMAdapter,
        processor: Any,
        *,
        dtype: str,
        world_size: int,
        max_images: int,
        max_new_tokens: int,
    ) -> VLLMGreedyGenerator:
        llm = vllm_module.LLM(**engine_kwargs(source, dtype, world_size, max_images))
        return cls(llm, vllm_module, adapter, processor, max_new_tokens, repetition_penalty(source))

    def __call__(self, prompts: list[PreparedPrompt]) -> list[str]:
        requests = build_requests(self.adapter, self.processor, prompts)
        outputs = self.llm.generate(requests, sampling_params=self.params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        ids = [list(output.outputs[0].token_ids) for output in outputs]
        self.generated_tokens += sum(len(row) for row in ids)
        return self.processor.batch_decode(ids, skip_special_tokens=True)
