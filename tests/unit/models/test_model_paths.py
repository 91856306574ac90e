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
