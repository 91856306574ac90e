"""Every shipped recipe parses and validates (model/data paths are the user's to provide)."""

from pathlib import Path

import pytest
import yaml

from vlm_r1.config import load_config
from vlm_r1.sft import SFTConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_validates(recipe):
    if recipe.name.startswith("sft"):
        assert load_config(recipe, cls=SFTConfig).optim.max_steps > 0
    else:
        assert load_config(recipe).rollout.num_generations >= 2


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_parse(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in {"NO", "MULTI_GPU", "FSDP", "DEEPSPEED"}
    if data["distributed_type"] == "DEEPSPEED":
        assert (ROOT / data["deepspeed_config"]["deepspeed_config_file"]).is_file()
