"""Three GRPO steps per model family, full fine-tuning and LoRA, on shapes REC data.

What must change changes and what is frozen stays bit-identical. "Vision" is judged
independently of the adapter: every parameter outside the model's own decoder
(``get_decoder()``) and output head is the vision side (tower, projector, merger, connector).
A family whose ``vision_prefixes`` miss its projector, or whose LoRA regex reaches into the
vision tower, fails here.
"""

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from vlm_r1.config import load_config
from vlm_r1.models import family_names, get_adapter
from vlm_r1.rl.trainer import run_training

MODES = {
    # name: (model section overrides, whether vision weights must change)
    "full": ({"freeze_vision": False}, True),
    "full-frozen-vision": ({"freeze_vision": True}, False),
    "lora": ({"lora": {"enabled": True, "r": 4, "alpha": 8}}, False),
}


def parameters(path: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForImageTextToText.from_pretrained(path)
    return {name: p.detach() for name, p in model.named_parameters()}


def language_side(path: Path) -> set[str]:
    """Names of the decoder's and output head's parameters, from the model's own accessors."""
    model = AutoModelForImageTextToText.from_pretrained(path)
    ids = {id(p) for p in model.get_decoder().parameters()}
    ids |= {id(p) for p in model.get_output_embeddings().parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def three_steps(make_config, family: str, model_section: dict) -> Path:
    config = load_config(
        make_config(
            family=family,
            model=model_section,
            rollout={"num_generations": 2, "max_completion_length": 8},
            optim={
                "prompts_per_step": 2,
                "micro_batch_size": 4,
                "learning_rate": 1e-2,
                "max_steps": 3,
            },
            algo={"beta": 0.04},
        )
    )
    run_training(config)
    return Path(config.checkpoint.output_dir)


@pytest.mark.parametrize("family", family_names())
def test_adapter_vision_modules_are_exactly_what_lies_outside_the_decoder(tiny_path, family):
    adapter = get_adapter(family)
    names = set(parameters(tiny_path(family)))
    vision = names - language_side(tiny_path(family))
    assert vision, f"{family}: the tiny model has no vision parameters"
    assert {n for n in names if adapter.is_vision_module(n)} == vision
    targets = re.compile(adapter.lora_target_regex())
    adapted = {n.removesuffix(".weight") for n in names if targets.match(n.removesuffix(".weight"))}
    assert adapted, f"{family}: the LoRA regex matches no linear layer"
    assert not {n for n in adapted if f"{n}.weight" in vision}, (
        "LoRA must not reach the vision side"
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("family", family_names())
def test_three_grpo_steps_change_what_trains_and_nothing_frozen(
    make_config, tiny_path, family, mode
):
    model_overrides, vision_trains = MODES[mode]
    base = tiny_path(family)
    out = three_steps(make_config, family, {**model_overrides, "path": str(base)})
    start, final = parameters(base), parameters(out / "final")
    assert set(start) == set(final), "the saved model has the checkpoint's parameters"
    changed = {k for k in start if not torch.equal(start[k], final[k])}
    language = language_side(base)
    vision = set(start) - language
    assert changed & language, f"{family} {mode}: no language-model weight changed"
    if vision_trains:
        assert changed & vision, f"{family}: vision weights should change when not frozen"
    else:
        frozen_changed = sorted(changed & vision)[:3]
        assert not frozen_changed, f"{family} {mode}: frozen vision changed: {frozen_changed}"
    if mode == "lora":
        # Merged LoRA changes exactly some adapted linears of the language model.
        targets = re.compile(get_adapter(family).lora_target_regex())
        outside = sorted(k for k in changed if not targets.match(k.removesuffix(".weight")))
        assert not outside, f"{family}: merged LoRA changed non-target weights {outside[:3]}"
        adapter_state = load_file(out / "checkpoint-000003/model/adapter_model.safetensors")
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter_state.items())
