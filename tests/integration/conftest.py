import pytest
import yaml

from vlm_r1.data.shapes import write_shapes


@pytest.fixture(scope="session")
def shapes_rec(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes_rec")
    return write_shapes(out, n_train=16, n_eval=4, seed=0, image_size="112", tasks=["rec"])[
        "rec_train"
    ]


@pytest.fixture()
def make_config(tmp_path, tiny_path, shapes_rec):
    """Write a tiny GRPO config; keyword overrides are nested dicts merged into it."""

    def make(name="run", family="qwen2_5_vl", **sections):
        config = {
            "model": {"path": str(tiny_path(family))},
            "data": {"train": str(shapes_rec)},
            "rewards": [
                {"name": "toy_rewards:digit_fraction", "weight": 1.0},
                {"name": "format", "weight": 0.5},
            ],
            "rollout": {"num_generations": 4, "max_completion_length": 12},
            "algo": {"beta": 0.0},
            "optim": {
                "prompts_per_step": 2,
                "micro_batch_size": 4,
                "learning_rate": 1e-3,
                "max_steps": 3,
            },
            "checkpoint": {"output_dir": str(tmp_path / name), "save_steps": 100, "resume": "none"},
            "logging": {"report_to": "none", "progress": False, "rollout_log_steps": 1},
            "seed": 0,
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return make
