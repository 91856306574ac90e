"""The vLLM backend around the engine: start-up error without vLLM, weight-sync names and
values (LoRA merged), request building, output conversion. The engine itself is mocked at
its boundary (``LLM``, ``SamplingParams``): vLLM needs a CUDA GPU, which CI does not have."""

import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import family_names, load_model
from vlm_r1.policy.prompts import prepare_prompt
from vlm_r1.rl import vllm_rollout
from vlm_r1.rl.rollout import SamplingParams
from vlm_r1.rl.vllm_rollout import (
    VLLMRollout,
    VLLMUnavailable,
    build_requests,
    rollout_from_outputs,
    sampling_params_for,
    vllm_weight_name,
)


# ------------------------------------------------------------------------------ fake vLLM
@dataclass
class FakeSamplingParams:
    n: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    stop_token_ids: list
    logit_bias: dict | None
    skip_special_tokens: bool


@dataclass
class FakeEngineModel:
    loaded: dict = field(default_factory=dict)
    log: list = field(default_factory=list)

    def load_weights(self, weights):
        for name, tensor in weights:
            self.loaded[name] = tensor.detach().clone()
        self.log.append("load_weights")


class FakeLLM:
    """Records what the backend sends; answers each request with scripted samples."""

    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.model = FakeEngineModel()
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(
                driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=self.model))
            )
        )
        self.calls = []
        self.script = None
        FakeLLM.instances.append(self)

    def reset_prefix_cache(self):
        self.model.log.append("reset_prefix_cache")

    def generate(self, requests, sampling_params, use_tqdm):
        self.model.log.append("generate")
        self.calls.append((requests, sampling_params))
        return [self.script(i, sp) for i, sp in enumerate(sampling_params)]


FAKE_VLLM = SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams)


def fake_output(samples):
    return SimpleNamespace(
        outputs=[SimpleNamespace(token_ids=tuple(ids), finish_reason=r) for ids, r in samples]
    )


# ---------------------------------------------------------------------------------- setup
@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm")
    path = write_shapes(out, 2, 0, seed=3, image_size="97..211", tasks=["rec"])["rec_train"]
    return list(read_samples(str(path)))


@pytest.fixture()
def qwen(tiny_path):
    return load_model(tiny_path("qwen2_5_vl"))


def test_missing_vllm_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(VLLMUnavailable, match=r"pip install 'vlm-r1\[vllm\]'.*rollout.backend=hf"):
        vllm_rollout.require_vllm()


def test_trainer_refuses_vllm_backend_at_start_up(monkeypatch, tmp_path):
    from vlm_r1.config import DataConfig, ModelConfig, RolloutConfig, TrainConfig
    from vlm_r1.rl.trainer import GRPOTrainer

    monkeypatch.setitem(sys.modules, "vllm", None)
    config = TrainConfig(
        model=ModelConfig(path=str(tmp_path / "never-loaded")),
        data=DataConfig(train=str(tmp_path / "never-read.jsonl")),
        rollout=RolloutConfig(backend="vllm"),
    ).validate()
    with pytest.raises(VLLMUnavailable, match="needs vLLM"):
        GRPOTrainer(config).setup()  # before the (missing) model is even looked at


# --------------------------------------------------------------------------- weight sync
@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "model.language_model.layers.0.mlp.up_proj.weight",
            "model.language_model.layers.0.mlp.up_proj.weight",
        ),
        (
            "base_model.model.model.language_model.layers.0.self_attn.q_proj.base_layer.weight",
            "model.language_model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight",
            None,
        ),
        ("module.lm_head.weight", "lm_head.weight"),
        (
            "model.visual.blocks.0._checkpoint_wrapped_module.attn.qkv.weight",
            "model.visual.blocks.0.attn.qkv.weight",
        ),
    ],
)
def test_weight_names_for_vllm(name, expected):
    assert vllm_weight_name(name) == expected


def _backend(adapter, processor, model_path="unused"):
    tok = processor.tokenizer
    return VLLMRollout(
        model_path,
        adapter,
        processor,
        [tok.convert_tokens_to_ids("<|im_end|>")],
        tok.pad_token_id,
        adapter.forbidden_token_ids(tok),
        vllm_module=FAKE_VLLM,
    )


def test_sync_sends_every_weight_under_its_transformers_name(qwen):
    adapter, model, processor = qwen
    backend = _backend(adapter, processor)
    assert backend.llm.kwargs["distributed_executor_backend"] == "external_launcher"
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # a trained weight, not what is on disk
    sent = backend.sync_weights(model)
    state = dict(model.named_parameters())
    assert sent == len(state)
    assert backend.llm.model.loaded.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(backend.llm.model.loaded[name], tensor)
    assert backend.llm.model.log[-1] == "reset_prefix_cache"


def test_sync_merges_lora_then_restores_the_adapter(qwen):
    from peft import LoraConfig, get_peft_model

    adapter, model, processor = qwen
    peft = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    ref = {n: p.detach().clone() for n, p in peft.named_parameters()}
    backend = _backend(adapter, processor)
    backend.sync_weights(peft)
    loaded = backend.llm.model.loaded
    assert not any("lora" in n for n in loaded)
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    base = ref["base_model.model." + name.replace(".weight", ".base_layer.weight")]
    a = ref["base_model.model." + name.replace(".weight", ".lora_A.default.weight")]
    b = ref["base_model.model." + name.replace(".weight", ".lora_B.default.weight")]
    scaling = peft.peft_config["default"].lora_alpha / 4
    assert torch.allclose(loaded[name], base + scaling * b @ a, atol=1e-6)
    assert not torch.allclose(loaded[name], base)  # the merge did something
    for n, p in peft.named_parameters():  # unmerged again: training goes on from the same state
        assert torch.allclose(p, ref[n], atol=1e-6), n


# ------------------------------------------------------------------------------ requests
@pytest.mark.parametrize("family", family_names())
def test_requests_carry_the_same_prompt_and_each_image_once(family, tiny_path, samples):
    adapter, _, processor = load_model(tiny_path(family))
    prompts = [prepare_prompt(adapter, processor, s) for s in samples]
    requests = build_requests(adapter, processor, prompts)
    assert len(requests) == len(prompts)
    for request, prompt in zip(requests, prompts, strict=True):
        assert len(request["multi_modal_data"]["image"]) == 1
        # What vLLM's processor makes of the request (text tokenized with the tokenizer's own
        # special tokens) is what the trainer's forwards see: one <bos> for Gemma 3, not two.
        again = processor(
            text=[request["prompt"]],
            images=[request["multi_modal_data"]["image"]],
            return_tensors="pt",
        )
        assert torch.equal(again["input_ids"], prompt.features["input_ids"])


def test_sampling_params_per_group():
    params = SamplingParams(
        num_generations=8, max_new_tokens=64, temperature=0.9, top_p=0.95, top_k=0
    )
    sp = sampling_params_for(
        FAKE_VLLM, params, seed=1234, eos_token_ids=[7], suppress_token_ids=[3, 4]
    )
    assert (sp.n, sp.seed, sp.max_tokens, sp.temperature, sp.top_p) == (8, 1234, 64, 0.9, 0.95)
    assert sp.top_k == -1  # vLLM's "off"
    assert sp.stop_token_ids == [7]
    assert sp.logit_bias == {3: -100.0, 4: -100.0}


def test_outputs_become_a_rollout(qwen, samples):
    adapter, _, processor = qwen
    tok = processor.tokenizer
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    prompts = [prepare_prompt(adapter, processor, s) for s in samples]
    outputs = [
        fake_output([([300, 301, eos], "stop"), ([302], "length")]),
        fake_output([([303, 304, 305, 306], "length"), ([307, eos], "stop")]),
    ]
    rollout = rollout_from_outputs(outputs, prompts, 2, [eos], pad, processor)
    assert rollout.completion_ids.tolist() == [
        [300, 301, eos, pad],
        [302, pad, pad, pad],
        [303, 304, 305, 306],
        [307, eos, pad, pad],
    ]
    assert rollout.completion_mask.tolist() == [
        [1, 1, 1, 0],
        [1, 0, 0, 0],
        [1, 1, 1, 1],
        [1, 1, 0, 0],
    ]
    assert rollout.truncated.tolist() == [False, True, True, False]
    assert rollout.prompt_of(2) is prompts[1]
    assert rollout.texts[0] == tok.decode([300, 301], skip_special_tokens=True)
    with pytest.raises(ValueError, match="expected 2"):
        rollout_from_outputs([fake_output([([1], "stop")])] * 2, prompts, 2, [eos], pad, processor)


def test_generate_syncs_first_then_sends_one_request_per_prompt(qwen, samples):
    adapter, model, processor = qwen
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    backend = _backend(adapter, processor)
    backend.llm.script = lambda i, sp: fake_output([([400 + i, eos], "stop")] * sp.n)
    prompts = [prepare_prompt(adapter, processor, s) for s in samples]
    rollout = backend.generate(
        model, prompts, [11, 12], SamplingParams(num_generations=3, max_new_tokens=8)
    )
    log = backend.llm.model.log
    assert log.index("generate") > log.index("reset_prefix_cache") > log.index("load_weights")
    ((requests, sampling),) = backend.llm.calls
    assert len(requests) == 2 and [sp.seed for sp in sampling] == [11, 12]
    assert all(sp.n == 3 for sp in sampling)
    assert rollout.completion_ids.shape == (6, 2)
    assert rollout.completion_ids[3:, 0].tolist() == [401] * 3
