"""Every edge value (0, -1, NaN, inf) that the config accepts really runs: a short GRPO or SFT
run with it ends normally (the others are refused at load, see tests/unit/test_config_fields)."""

import pytest
import yaml
from config_walk import accepted_edge_values

from vlm_r1.config import TrainConfig, load_config
from vlm_r1.rl.trainer import run_training
from vlm_r1.sft import SFTConfig, run_sft


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["grpo", "sft"])
def test_accepted_edge_values_run(make_config, tmp_path, recipe):
    cls, run = (TrainConfig, run_training) if recipe == "grpo" else (SFTConfig, run_sft)
    accepted = accepted_edge_values(cls)
    assert accepted  # e.g. optim.max_grad_norm=0 (no clipping), algo.beta=0 (no reference)
    base = yaml.safe_load(make_config().read_text())
    if recipe == "sft":
        base = {k: v for k, v in base.items() if k not in ("rewards", "rollout", "algo")}
    base["optim"]["max_steps"] = 2
    for key, value in accepted:
        out = tmp_path / f"{recipe}-{key}-{value}"
        overrides = [f"{key}={value}", f"checkpoint.output_dir={out}", "checkpoint.save_steps=1"]
        if key.startswith("model.lora."):
            overrides.append("model.lora.enabled=true")
        path = tmp_path / "base.yaml"
        path.write_text(yaml.safe_dump(base))
        run(load_config(path, overrides, cls=cls))
        assert (out / "final").is_dir(), (key, value)
