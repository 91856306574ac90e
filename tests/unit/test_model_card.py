"""The model card of ``final/`` and the upload to the hub: what the card says, and that
``push_run`` hands ``huggingface_hub`` the right repo, folder, visibility and message, or
fails naming the problem (no final/, bad repo id, no token, no network). The hub client is
replaced at its boundary (``HfApi``); a real upload needs a machine with a hub."""

import importlib
import json
import math

import huggingface_hub
import pytest
import yaml

from vlm_r1.config import ConfigError, load_config
from vlm_r1.config.loading import to_dict
from vlm_r1.errors import UserFacingError
from vlm_r1.model_card import (
    CARD_FILE,
    PushError,
    launch_command,
    push_run,
    render_card,
)
from vlm_r1.sft import SFTConfig

METRICS = {"step": 40, "reward": 1.25, "kl": 0.0123, "reward/accuracy": math.nan}


def grpo_config(*overrides):
    config = to_dict(
        load_config(
            None,
            [
                "data.train=/data/rec_train.jsonl:/data/more.jsonl",
                "model.path=Qwen/Qwen2.5-VL-3B-Instruct",
                "rewards=[{name: accuracy, weight: 2.0, params: {method: rec_iou}}, "
                "{name: format, weight: 0.5}]",
                "algo.loss_type=dapo",
                "algo.beta=0.04",
                "algo.epsilon_high=0.28",
                *overrides,
            ],
        )
    )
    return {**config, "launch": {"engine": "replicated", "world_size": 2}}


def split_card(card):
    assert card.startswith("---\n")
    _, meta, body = card.split("---\n", 2)
    return yaml.safe_load(meta), body


def test_the_card_records_model_data_rewards_recipe_metrics_and_command():
    card = render_card(grpo_config(), METRICS, "vlm-r1 train --config configs/grpo_rec.yaml")
    meta, body = split_card(card)
    assert meta["library_name"] == "transformers"
    assert meta["base_model"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert {"vlm-r1", "grpo"} <= set(meta["tags"])
    assert "`Qwen/Qwen2.5-VL-3B-Instruct`" in body
    assert "- `/data/rec_train.jsonl`\n- `/data/more.jsonl`" in body
    assert '| accuracy | 2 | {"method": "rec_iou"} |' in body
    assert "| format | 0.5 | {} |" in body
    assert "| loss_type | dapo |" in body and "| epsilon_high | 0.28 |" in body
    assert "| beta | 0.04 |" in body and "| num_generations | 8 |" in body
    assert "| world_size | 2 |" in body  # how it was launched
    assert "At step 40:" in body and "| kl | 0.0123 |" in body
    assert "| reward/accuracy | nan |" in body
    assert "```\nvlm-r1 train --config configs/grpo_rec.yaml\n```" in body


def test_a_local_base_model_is_named_in_the_body_but_not_as_hub_metadata(tmp_path):
    local = tmp_path / "my-base"
    local.mkdir()
    meta, body = split_card(render_card(grpo_config(f"model.path={local}"), None, ""))
    assert "base_model" not in meta  # the hub accepts only repo ids there
    assert f"`{local}`" in body
    assert "No metrics were logged." in body and "(not recorded)" in body


def test_an_sft_card_has_no_rewards_and_says_sft():
    config = to_dict(load_config(None, ["data.train=/data/a.jsonl"], cls=SFTConfig))
    meta, body = split_card(render_card(config, METRICS, "vlm-r1 sft"))
    assert "sft" in meta["tags"] and "grpo" not in meta["tags"]
    assert "## Rewards" not in body and "# SFT fine-tune" in body


def test_a_value_with_a_pipe_or_newline_cannot_break_a_table():
    card = render_card(grpo_config("data.image_folders=/a|b"), {"step": 1, "x|y": 1.0}, "")
    assert "- image_folders: `/a|b`" in card  # a list item, not a table
    assert "| x\\|y | 1 |" in card


def test_the_command_is_named_by_the_program_not_the_venv_path():
    argv = ["/home/me/.venv/bin/vlm-r1", "train", "--config", "my recipe.yaml", "algo.beta=0"]
    assert launch_command(argv) == "vlm-r1 train --config 'my recipe.yaml' algo.beta=0"


# ------------------------------------------------------------------------------ push
class FakeHfApi:
    """``huggingface_hub.HfApi`` at its boundary: records the calls, uploads nothing."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        # What is in the folder at the moment of the upload is what the hub would get.
        files = sorted(p.name for p in kwargs["folder_path"].iterdir())
        self.calls.append(("upload_folder", {**kwargs, "files": files}))


@pytest.fixture()
def hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return FakeHfApi.calls


@pytest.fixture()
def finished_run(tmp_path):
    """A run folder as training leaves it: config.json, metrics.jsonl, final/ with a model."""
    run = tmp_path / "rec-grpo"
    (run / "final").mkdir(parents=True)
    (run / "final" / "model.safetensors").write_bytes(b"weights")
    (run / "config.json").write_text(json.dumps(grpo_config()))
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "reward": 0.5}) + "\n" + json.dumps(METRICS) + "\n"
    )
    return run


def test_push_uploads_final_with_its_card(finished_run, hub):
    (finished_run / "final" / CARD_FILE).write_text("the card written at the end of training")
    url = push_run(finished_run, "me/rec-grpo", private=False)
    assert url == "https://huggingface.co/me/rec-grpo"
    assert [name for name, _ in hub] == ["init", "create_repo", "upload_folder"]
    assert hub[0][1] == {"token": "hf_test_token"}
    assert hub[1][1] == {
        "repo_id": "me/rec-grpo",
        "repo_type": "model",
        "private": False,
        "exist_ok": True,
    }
    upload = hub[2][1]
    assert upload["repo_id"] == "me/rec-grpo" and upload["repo_type"] == "model"
    assert upload["folder_path"] == finished_run / "final"
    assert upload["files"] == [CARD_FILE, "model.safetensors"]
    assert upload["commit_message"] == "Upload GRPO model from vlm-r1 run rec-grpo, step 40"
    assert (finished_run / "final" / CARD_FILE).read_text().startswith("the card written")


def test_a_run_without_a_card_gets_one_from_its_config_before_the_upload(finished_run, hub):
    push_run(finished_run, "me/rec-grpo")
    assert hub[1][1]["private"] is True  # the default: publish deliberately
    assert CARD_FILE in hub[2][1]["files"]
    card = (finished_run / "final" / CARD_FILE).read_text()
    assert "| format | 0.5 | {} |" in card and "At step 40:" in card
    assert "(not recorded)" in card  # the command of an old run is unknown


def test_no_final_folder_is_an_error_naming_it(tmp_path, hub):
    with pytest.raises(PushError, match=r"final does not exist: push uploads a finished run"):
        push_run(tmp_path, "me/model")
    assert hub == []


@pytest.mark.parametrize("repo", ["model", "me/my model", "me/a/b", "-me/model"])
def test_a_bad_repo_id_is_refused_naming_the_flag(finished_run, hub, repo):
    with pytest.raises(ConfigError, match=r"--repo=.* is not a hub repo id: use owner/name"):
        push_run(finished_run, repo)
    assert hub == []


def test_no_token_is_an_error_before_any_request(finished_run, monkeypatch, tmp_path):
    """The real client: no token in the environment or on disk."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(
        PushError, match=r"no Hugging Face token .* `hf auth login` or set HF_TOKEN"
    ):
        push_run(finished_run, "me/model")


def test_no_network_is_an_error_naming_the_repo_with_the_hub_error_as_cause(
    finished_run, monkeypatch
):
    """The real client with hub access switched off (``HF_HUB_OFFLINE``): its refusal to make
    a request becomes a one-line input error, not a traceback and not a silent skip."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match=r"to the hub repo me/model failed: .*offline") as info:
        push_run(finished_run, "me/model")
    assert isinstance(info.value.__cause__, huggingface_hub.errors.OfflineModeIsEnabled)
    assert isinstance(info.value, UserFacingError)


def test_a_refusal_by_the_hub_is_an_error_with_its_cause(finished_run, hub, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError, Response

    http = importlib.import_module(Response.__module__)  # the HTTP library the hub uses
    answer = Response(403, request=http.Request("POST", "https://huggingface.co/api/repos/create"))

    def refuse(self, repo_id, **kwargs):
        raise HfHubHTTPError("403 Forbidden: you cannot create a repo here", response=answer)

    monkeypatch.setattr(FakeHfApi, "create_repo", refuse)
    with pytest.raises(PushError, match="me/model failed: 403 Forbidden") as info:
        push_run(finished_run, "me/model")
    assert isinstance(info.value.__cause__, HfHubHTTPError)
