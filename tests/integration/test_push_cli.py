"""One tiny GRPO run, end to end, with the trackers and the hub switched on: W&B (offline)
gets every step's scalars and rollout table, ``final/`` gets its model card, training ends by
uploading ``final/`` to ``checkpoint.push_to_hub``, and ``vlm-r1 push`` uploads it again.
The hub client is replaced at its boundary (``huggingface_hub.HfApi``): nothing leaves the
machine. W&B's offline record is read back with tests/support/wandb_offline.py."""

import json
import sys
from pathlib import Path

import huggingface_hub
import pytest
import wandb_offline
from typer.testing import CliRunner

from vlm_r1 import cli
from vlm_r1.config import load_config
from vlm_r1.rl.trainer import run_training

pytest.importorskip("wandb", reason="pip install -e '.[dev]' installs wandb")


class FakeHfApi:
    """Records what would be uploaded: the call arguments and the folder's files then."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("upload_folder", {**kwargs, "files": files}))


@pytest.fixture()
def hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return FakeHfApi.calls


@pytest.fixture()
def offline_wandb(monkeypatch, tmp_path):
    folder = tmp_path / "wandb-files"
    folder.mkdir()
    for name, value in wandb_offline.offline_env(folder).items():
        monkeypatch.setenv(name, value)
    return folder


@pytest.mark.slow
def test_a_run_logs_to_wandb_writes_its_card_and_pushes(
    make_config, tiny_path, shapes_rec, hub, offline_wandb, monkeypatch
):
    path = make_config(
        checkpoint={"push_to_hub": "me/tiny-rec", "save_steps": 100, "resume": "none"},
        logging={"report_to": "wandb", "progress": False, "rollout_log_steps": 1},
    )
    config = load_config(path)
    # As `vlm-r1 train` would be started: the card records this command line.
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/vlm-r1", "train", "--config", str(path)])
    run_training(config)
    run = Path(config.checkpoint.output_dir)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]

    # The card, written with final/.
    card = (run / "final" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "- vlm-r1\n- grpo\n" in card
    assert f"`{tiny_path('qwen2_5_vl')}`" in card  # the base model
    assert f"- `{shapes_rec}`" in card  # the data
    assert "| toy_rewards:digit_fraction | 1 | {} |" in card and "| format | 0.5 | {} |" in card
    assert "| loss_type | grpo |" in card and "| beta | 0 |" in card
    assert "| num_generations | 4 |" in card and "| max_steps | 3 |" in card
    assert "At step 3:" in card and f"| reward | {metrics[-1]['reward']:.6g} |" in card
    assert f"```\nvlm-r1 train --config {path}\n```" in card

    # The push at the end of training: the main process, once, final/ with its card.
    assert [name for name, _ in hub] == ["create_repo", "upload_folder"]
    assert hub[0][1] == {
        "repo_id": "me/tiny-rec",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    upload = hub[1][1]
    assert Path(upload["folder_path"]) == run / "final"
    assert {"README.md", "config.json", "model.safetensors"} <= set(upload["files"])
    assert upload["commit_message"] == f"Upload GRPO model from vlm-r1 run {run.name}, step 3"

    # W&B, offline: scalars at every step, and every step's rollout table (the last one sent
    # by the final save), each a run_table artifact with the completions and images.
    import wandb

    wandb.teardown()  # the W&B service writes its log asynchronously: flush it before reading
    found = wandb_offline.offline_run(offline_wandb)
    history = wandb_offline.history(found)
    assert [h["_step"] for h in history] == [1, 2, 3]
    assert [h["reward"] for h in history] == pytest.approx([m["reward"] for m in metrics])
    assert [h["rollouts/nrows"] for h in history] == [8, 8, 8]  # 2 prompts x G = 4
    table, files = wandb_offline.last_table(found)
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    written = [json.loads(line) for line in (run / "rollouts" / "step_000003_rank0.jsonl").open()]
    assert [r["completion"] for r in rows] == [w["completion"] for w in written]
    assert all(r["image"]["path"] in files for r in rows)

    # `vlm-r1 push` uploads the same folder again, here as a public repo.
    hub.clear()
    result = CliRunner().invoke(cli.app, ["push", str(run), "--repo", "me/tiny-rec-2", "--public"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "https://huggingface.co/me/tiny-rec-2"
    assert hub[0][1]["private"] is False and Path(hub[1][1]["folder_path"]) == run / "final"


def test_push_without_final_exits_2_with_one_line(tmp_path, hub, monkeypatch, capsys):
    monkeypatch.delenv("VLM_R1_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["vlm-r1", "push", str(tmp_path), "--repo", "me/model"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tmp_path / 'final'} does not exist: push uploads a finished run's final "
        "model (a run writes final/ when it reaches optim.max_steps)"
    )
    assert hub == []


def test_a_bad_push_to_hub_fails_at_load_naming_the_key(make_config):
    from vlm_r1.config import ConfigError

    with pytest.raises(ConfigError, match=r"checkpoint.push_to_hub='tiny-rec' is not a hub repo"):
        load_config(make_config(checkpoint={"push_to_hub": "tiny-rec"}))
