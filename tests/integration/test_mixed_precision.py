"""bf16 that learns: the recipes' ``model.dtype: bfloat16`` computes in bf16 while the optimizer
steps float32 master weights, so an update at lr 1e-6 is not rounded away.

One process (autocast). The same precision under DDP, FSDP2 and ZeRO-2/3 is covered by
tests/integration/test_scale_out.py::test_bf16_reference_computes_in_the_policys_precision.
"""

from __future__ import annotations

import pytest
import torch

from vlm_r1.config import CheckpointConfig, LoggingConfig, ModelConfig, OptimConfig
from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.engine import Engine, EngineConfig
from vlm_r1.policy.logprobs import completion_logprobs
from vlm_r1.policy.prompts import prepare_prompt


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each Engine here asks accelerate for its own precision; its state is a process-wide
    singleton that refuses a change, so every test starts and ends without one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def rec_samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    files = write_shapes(out, n_train=4, n_eval=0, seed=3, image_size="96..160", tasks=["rec"])
    return list(read_samples(str(files["rec_train"])))


def make_engine(tmp_path, tiny_path, dtype: str, lr: float) -> Engine:
    config = EngineConfig(
        model=ModelConfig(path=str(tiny_path("qwen2_5_vl")), dtype=dtype),
        optim=OptimConfig(prompts_per_step=1, learning_rate=lr, max_grad_norm=None),
        checkpoint=CheckpointConfig(output_dir=str(tmp_path / dtype)),
        logging=LoggingConfig(report_to="none", progress=False),
        seed=0,
        full_config={},
    )
    return Engine(config)


def sequence_loss(engine: Engine, samples, completion: str = "The box is here") -> torch.Tensor:
    """Mean negative log-prob of a fixed completion after each sample's prompt (image included)."""
    prompts = [prepare_prompt(engine.adapter, engine.processor, s) for s in samples]
    ids = engine.processor.tokenizer(completion, return_tensors="pt")["input_ids"]
    ids = ids.repeat(len(prompts), 1)
    logps = completion_logprobs(
        engine.model, prompts, ids, torch.ones_like(ids), engine.pad_token_id
    )
    return -logps.mean()


def test_bf16_recipe_keeps_fp32_masters_and_every_update_lands(tmp_path, tiny_path, rec_samples):
    engine = make_engine(tmp_path, tiny_path, "bfloat16", lr=1e-6)
    assert engine.parallel.record.mixed_precision == "bf16"
    trainable = {n: p for n, p in engine.unwrapped().named_parameters() if p.requires_grad}
    assert {p.dtype for p in trainable.values()} == {torch.float32}  # the masters

    linear_outputs = []
    hook = engine.unwrapped().lm_head.register_forward_hook(
        lambda module, args, out: linear_outputs.append(out.dtype)
    )
    loss = sequence_loss(engine, rec_samples[:2])
    hook.remove()
    assert linear_outputs and set(linear_outputs) == {torch.bfloat16}  # bf16 compute

    engine.backward(loss, last=True)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    grads = {n: p.grad.detach().clone() for n, p in trainable.items() if p.grad is not None}
    _, stepped = engine.optimizer_step()
    assert stepped
    with_grad = sum(int((g != 0).sum()) for g in grads.values())
    changed = sum(
        int(((trainable[n].detach() != before[n]) & (g != 0)).sum()) for n, g in grads.items()
    )
    assert with_grad > 10_000
    # Adam's first step moves every weight with a gradient by ~lr; float32 keeps all of them.
    assert changed / with_grad > 0.999, f"{changed} of {with_grad} weights with a gradient moved"

    # The same gradients stepped on bf16 weights (what the recipes did before): most of the
    # update rounds away. This is what the assertion above would catch.
    bf16 = {n: before[n].to(torch.bfloat16).requires_grad_(True) for n in grads}
    for n, p in bf16.items():
        p.grad = grads[n].to(torch.bfloat16)
    torch.optim.AdamW(list(bf16.values()), lr=1e-6, weight_decay=0.0).step()
    moved = sum(
        int(((bf16[n].detach() != before[n].to(torch.bfloat16)) & (g != 0)).sum())
        for n, g in grads.items()
    )
    assert moved / with_grad < 0.2


def short_run(engine: Engine, samples, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        loss = sequence_loss(engine, samples)
        engine.backward(loss, last=True)
        engine.optimizer_step()
        losses.append(float(loss.detach()))
    return losses


def test_a_short_bf16_run_tracks_fp32(tmp_path, tiny_path, rec_samples):
    """Five steps on a fixed batch at lr 1e-4: bf16 compute stays within 2% of fp32 per step
    (the tiny model's bf16 forward alone differs by ~0.1-0.5%), and both runs learn."""
    fp32 = short_run(make_engine(tmp_path, tiny_path, "float32", lr=1e-4), rec_samples[:2], 5)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    bf16 = short_run(make_engine(tmp_path, tiny_path, "bfloat16", lr=1e-4), rec_samples[:2], 5)
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]
    for a, b in zip(bf16, fp32, strict=True):
        assert a == pytest.approx(b, rel=2e-2)


def test_the_vision_encoder_called_directly_computes_in_bf16_too(tmp_path, tiny_path, rec_samples):
    """Shared image features call ``get_image_features`` on the unwrapped model, outside the
    prepared forward's autocast: the engine's precision context must cover it (the GRPO
    trainer encodes under it), or the tower computes in fp32 next to a bf16 policy."""
    from vlm_r1.policy.image_features import SharedImageFeatures

    engine = make_engine(tmp_path, tiny_path, "bfloat16", lr=1e-6)
    prompts = [prepare_prompt(engine.adapter, engine.processor, s) for s in rec_samples[:2]]
    linear = next(
        m
        for name, m in engine.unwrapped().named_modules()
        if isinstance(m, torch.nn.Linear) and engine.adapter.is_vision_module(name + ".weight")
    )
    seen = []
    hook = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.no_grad():
        SharedImageFeatures.encode(engine.unwrapped(), prompts)
        assert seen == [torch.float32] * len(seen) and seen  # bypassed: no autocast
        seen.clear()
        with engine.precision_context():
            SharedImageFeatures.encode(engine.unwrapped(), prompts)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
