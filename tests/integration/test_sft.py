"""SFT: targets in the family's coordinate system, and a short run that learns its targets."""

import json

import pytest

from vlm_r1.config import CheckpointConfig, DataConfig, LoggingConfig, ModelConfig, OptimConfig
from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import get_adapter
from vlm_r1.policy.prompts import prepare_prompt
from vlm_r1.rewards.common import gt_boxes
from vlm_r1.sft import SFTConfig, run_sft, target_text


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft_data")
    return write_shapes(
        out, n_train=12, n_eval=0, seed=5, image_size="150..300", tasks=["rec", "ovd"]
    )


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_targets_are_written_in_the_family_coordinate_system(family, tiny_path, data):
    from transformers import AutoProcessor

    adapter = get_adapter(family)
    processor = AutoProcessor.from_pretrained(tiny_path(family))
    for sample in read_samples(str(data["rec_train"])):
        prompt = prepare_prompt(adapter, processor, sample)
        text = target_text(prompt, adapter, processor, think=True)
        assert text.startswith("<think>") and text.endswith("</answer>")
        written = json.loads(text.split("<answer>")[1].split("</answer>")[0])
        expected = adapter.boxes_to_model(
            processor, prompt.image_size, gt_boxes(sample.solution)[0]
        )[0]
        assert written == [int(v) for v in expected]
    ovd = next(iter(read_samples(str(data["ovd_train"]))))
    text = target_text(prepare_prompt(adapter, processor, ovd), adapter, processor, think=False)
    assert text.startswith("<answer>") and ("bbox_2d" in text or "None" in text)


@pytest.mark.slow
def test_short_sft_run_lowers_the_loss_and_saves_a_loadable_model(tmp_path, tiny_path, data):
    config = SFTConfig(
        model=ModelConfig(path=str(tiny_path("qwen2_5_vl"))),
        data=DataConfig(train=str(data["rec_train"])),
        optim=OptimConfig(prompts_per_step=4, micro_batch_size=2, learning_rate=3e-3, max_steps=20),
        checkpoint=CheckpointConfig(output_dir=str(tmp_path / "sft"), save_steps=6, resume="none"),
        logging=LoggingConfig(report_to="none", progress=False, rollout_log_steps=0),
    ).validate()
    run_sft(config)
    history = [
        json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(history) == 20
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]  # measured: ~6.4 -> ~2
    kept = sorted(p.name for p in (tmp_path / "sft").glob("checkpoint-*"))
    assert kept == ["checkpoint-000018", "checkpoint-000020"]  # save every 6 + final, keep_last=2
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(tmp_path / "sft" / "final")
