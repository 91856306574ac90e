"""The ``prompt`` section reaches the tokens GRPO's rollouts and SFT's steps train on."""

from vlm_r1.config import (
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    load_config,
)
from vlm_r1.config.sections import PromptConfig
from vlm_r1.policy import prompts as prompt_module
from vlm_r1.rl.trainer import GRPOTrainer
from vlm_r1.sft import SFTConfig, run_sft

CUSTOM = {"system": "You locate things.", "templates": {"rec": "Locate: {question}. JSON only."}}


def check_custom(tokenizer, prompt):
    """The prompt's tokens (and the text vLLM would be sent) read as the custom system turn
    and template, not VLM-R1's."""
    for text in (tokenizer.decode(prompt.features["input_ids"][0]), prompt.chat_text):
        assert text.startswith("<|im_start|>system\nYou locate things.<|im_end|>\n")
        assert "Locate: Please provide the bounding box" in text and ". JSON only." in text
        assert "First output the thinking process" not in text


def test_grpo_rollouts_are_prompted_by_the_prompt_section(make_config):
    trainer = GRPOTrainer(load_config(make_config(prompt=CUSTOM)))
    trainer.setup()
    try:
        rollout, _ = trainer.rollout(2)
    finally:
        trainer.engine.cleanup()
    assert len(rollout.prompts) == 2
    for prompt in rollout.prompts:
        check_custom(trainer.engine.processor.tokenizer, prompt)


def test_sft_steps_are_prompted_by_the_prompt_section(monkeypatch, tmp_path, tiny_path, shapes_rec):
    built = []

    def spy(*args, **kwargs):
        prompt = prompt_module.prepare_prompt(*args, **kwargs)
        built.append(prompt)
        return prompt

    monkeypatch.setattr("vlm_r1.sft.prepare_prompt", spy)
    config = SFTConfig(
        model=ModelConfig(path=str(tiny_path("qwen2_5_vl"))),
        data=DataConfig(train=str(shapes_rec)),
        prompt=PromptConfig(**CUSTOM),
        optim=OptimConfig(prompts_per_step=2, micro_batch_size=2, max_steps=1),
        checkpoint=CheckpointConfig(output_dir=str(tmp_path / "sft"), resume="none"),
        logging=LoggingConfig(report_to="none", progress=False, rollout_log_steps=0),
    ).validate()
    run_sft(config)
    assert len(built) == 2
    tokenizer = built[0].adapter.load_processor(tiny_path("qwen2_5_vl")).tokenizer
    for prompt in built:
        check_custom(tokenizer, prompt)
