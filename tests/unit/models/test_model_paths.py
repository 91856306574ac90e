"""A mistyped local model path fails at once, naming the path; hub ids still go to the hub."""

import types

import pytest
import transformers

from vlm_r1.models import ModelLoadError, detect_adapter, get_adapter, load_model


@pytest.fixture()
def no_hub(monkeypatch):
    """Any hub or weight loading fails the test: a local-looking path must never get there."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"went to the hub / loader with {args}")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    monkeypatch.setattr(get_adapter("qwen2_5_vl"), "load", refuse)


@pytest.mark.parametrize(
    "path",
    ["./models/nope", "../nope", "~/vlm-r1-no-such-model", "/abs/no/such/model", "models/nope"],
)
@pytest.mark.parametrize("family", [None, "qwen2_5_vl"])
def test_missing_local_path_fails_fast(tmp_path, monkeypatch, no_hub, path, family):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # so "models/nope" is a local path, not owner/name
    with pytest.raises(ModelLoadError, match=rf"no checkpoint at '{path}': no such folder"):
        load_model(path, family)


def test_hub_ids_still_go_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    asked = []

    def from_pretrained(source, *args, **kwargs):
        asked.append(source)
        return types.SimpleNamespace(model_type="qwen2_5_vl")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    assert detect_adapter("Qwen/Qwen2.5-VL-3B-Instruct").family == "qwen2_5_vl"
    assert asked == ["Qwen/Qwen2.5-VL-3B-Instruct"]


def test_a_remote_code_internvl_checkpoint_is_refused_with_the_native_alternative(tmp_path):
    folder = tmp_path / "InternVL2_5-4B"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "internvl_chat", "auto_map": {}}')
    with pytest.raises(ModelLoadError, match=r"internvl_chat.*-hf.*convert_internvl_weights"):
        load_model(folder)


def test_tiny_model_help_lists_every_registered_family():
    from typer.testing import CliRunner

    from vlm_r1.cli import app
    from vlm_r1.models import family_names

    result = CliRunner().invoke(app, ["tiny-model", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    listed = " ".join(result.output.split())
    missing = [f for f in family_names() if f not in listed]
    assert not missing, f"tiny-model --help does not list {missing}"
