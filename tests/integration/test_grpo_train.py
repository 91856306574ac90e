"""GRPO end to end on a tiny Qwen2.5-VL and shapes REC data."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from vlm_r1.config import load_config
from vlm_r1.models import get_adapter
from vlm_r1.rl.trainer import run_training


def weights(folder):
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def read_metrics(out):
    with open(f"{out}/metrics.jsonl") as handle:
        return [json.loads(line) for line in handle]


VARIANTS = [
    pytest.param({"algo": {"loss_type": "grpo", "beta": 0.04}}, id="grpo-beta"),
    pytest.param({"algo": {"loss_type": "bnpo", "num_iterations": 2}}, id="bnpo-mu2"),
    pytest.param(
        {
            "algo": {"loss_type": "dr_grpo", "scale_rewards": "none"},
            "model": {"freeze_vision": True},
        },
        id="dr_grpo-frozen",
    ),
    pytest.param(
        {"algo": {"loss_type": "dapo", "epsilon_high": 0.28, "beta": 0.04, "num_iterations": 2}},
        id="dapo-beta-mu2",
    ),
    pytest.param(
        {"algo": {"loss_type": "gspo", "epsilon_low": 3e-4, "epsilon_high": 4e-4}}, id="gspo"
    ),
    pytest.param(
        {"model": {"gradient_checkpointing": True}, "algo": {"beta": 0.04}}, id="grad-ckpt"
    ),
    pytest.param({"algo": {"top_entropy_quantile": 0.2}}, id="top-entropy"),
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", VARIANTS)
def test_full_finetune_variants(make_config, tiny_path, overrides):
    config = load_config(make_config(**overrides))
    start = weights(tiny_path("qwen2_5_vl"))
    metrics = run_training(config)
    # The centre spread needs two parsed REC boxes in a batch; an untrained tiny model may
    # write none, and then the monitor is undefined (NaN) by design. So is the share of
    # well-formed detection answers on this REC-only data.
    undefined_ok = {
        "skipped_steps",
        "monitor/centre_spread_ratio",
        "monitor/well_formed_answer_rate",
    }
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k not in undefined_ok)
    out = config.checkpoint.output_dir
    final = weights(__import__("pathlib").Path(out) / "final")
    adapter = get_adapter("qwen2_5_vl")
    changed = {k for k in start if not torch.equal(start[k], final[k])}
    language = {k for k in start if not adapter.is_vision_module(k)}
    vision = set(start) - language
    assert changed & language, "language weights should change"
    if config.model.freeze_vision:
        assert not changed & vision, (
            f"frozen vision weights changed: {sorted(changed & vision)[:3]}"
        )
    else:
        assert changed & vision, "vision weights should change when not frozen"
    history = read_metrics(out)
    assert [h["step"] for h in history] == [1, 2, 3]
    # The policy's mean token entropy: positive, at most log(vocabulary) (uniform).
    vocab = AutoConfig.from_pretrained(tiny_path("qwen2_5_vl")).get_text_config().vocab_size
    assert all(0 < h["entropy"] <= math.log(vocab) for h in history)
    if config.algo.beta > 0:
        assert any(h["kl"] > 0 for h in history[1:])
    from transformers import AutoModelForImageTextToText, AutoProcessor

    AutoModelForImageTextToText.from_pretrained(f"{out}/final")
    AutoProcessor.from_pretrained(f"{out}/final")


@pytest.mark.slow
def test_lora_trains_adapters_only_and_saves_a_loadable_merged_model(make_config, tiny_path):
    config = load_config(
        make_config(model={"lora": {"enabled": True, "r": 4, "alpha": 8}}, algo={"beta": 0.04})
    )
    run_training(config)
    out = __import__("pathlib").Path(config.checkpoint.output_dir)
    adapter_state = load_file(out / "checkpoint-000003/model/adapter_model.safetensors")
    lora_b = [v for k, v in adapter_state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at 0 and must move"
    assert not any("visual" in k for k in adapter_state), "no LoRA on the vision tower"
    start, merged = weights(tiny_path("qwen2_5_vl")), weights(out / "final")
    changed = {k for k in start if not torch.equal(start[k], merged[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(out / "final")


@pytest.mark.slow
def test_reward_rises_with_a_learnable_toy_reward(make_config):
    config = load_config(
        make_config(
            rewards=[{"name": "toy_rewards:digit_fraction", "weight": 1.0}],
            optim={
                "prompts_per_step": 2,
                "micro_batch_size": 16,
                "learning_rate": 5e-3,
                "max_steps": 40,
            },
            rollout={"num_generations": 8, "max_completion_length": 12},
            logging={"report_to": "none", "progress": False, "rollout_log_steps": 0},
        )
    )
    run_training(config)
    history = [h["reward"] for h in read_metrics(config.checkpoint.output_dir)]
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last > first + 0.3, (first, last)  # measured: ~0.02 -> ~0.9


@pytest.mark.slow
@pytest.mark.parametrize("freeze_vision", [False, True], ids=["vision-trains", "vision-frozen"])
def test_shared_image_features_train_like_repeated_images(make_config, freeze_vision, monkeypatch):
    """One rollout batch, two updates (mu=2) with a KL term: sharing the image features and the
    prompt prefix across the group must leave the same weights and the same logged loss/KL as
    repeating the prompt and image in every row."""
    from vlm_r1.policy.image_features import SharedImageFeatures

    encode, calls = SharedImageFeatures.encode.__func__, []

    def counting(cls, model, prompts):
        calls.append(len(prompts))
        return encode(cls, model, prompts)

    monkeypatch.setattr(SharedImageFeatures, "encode", classmethod(counting))
    runs = {}
    for share in (True, False):
        config = load_config(
            make_config(
                name=f"share-{share}",
                model={"freeze_vision": freeze_vision},
                algo={"beta": 0.04, "num_iterations": 2},
                optim={"max_steps": 2, "micro_batch_size": 3},
                speed={"share_image_features": share, "share_prompt_prefix": share},
            )
        )
        run_training(config)
        out = __import__("pathlib").Path(config.checkpoint.output_dir)
        runs[share] = (weights(out / "final"), read_metrics(out))
        if share:
            # collect: once (policy = old = ref when frozen) or twice (ref has its own tower);
            # plus one encode per update when the tower trains.
            assert len(calls) == (1 if freeze_vision else 2 + 2), calls
    (shared_w, shared_m), (naive_w, naive_m) = runs[True], runs[False]
    start = weights(__import__("pathlib").Path(load_config(make_config()).model.path))
    moved = [k for k in naive_w if not torch.equal(naive_w[k], start[k])]
    assert moved, "training changed nothing: the comparison would be vacuous"
    for key in naive_w:
        # Adam moves each weight by ~lr (1e-3 here) per step whatever the gradient's size, so
        # float noise in near-zero gradients shows up as ~1e-6; a wrong gradient as ~1e-3.
        assert torch.allclose(shared_w[key], naive_w[key], rtol=0, atol=1e-5), key
    for a, b in zip(shared_m, naive_m, strict=True):
        for key in ("loss", "kl", "reward"):
            assert abs(a[key] - b[key]) <= 1e-5, (key, a[key], b[key])


def test_cleanup_releases_the_model_and_optimizer_before_the_process_group_goes(make_config):
    """``cleanup`` frees the policy, its reference and the optimizer while the interpreter is
    whole: a sharded model holds the process group and its last collectives' handles, and
    freed at exit instead, gloo's threads can abort a finished run."""
    import gc
    import weakref

    from vlm_r1.rl.trainer import GRPOTrainer

    trainer = GRPOTrainer(load_config(make_config(algo={"beta": 0.04})))
    trainer.setup()
    engine = trainer.engine
    held = [weakref.ref(x) for x in (engine.unwrapped(), engine.ref_model, engine.optimizer)]
    trainer.cleanup()
    gc.collect()
    assert [ref() is None for ref in held] == [True, True, True]
