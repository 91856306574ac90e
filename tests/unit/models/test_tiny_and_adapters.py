import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlm_r1.models import ModelLoadError, detect_adapter, family_names, get_adapter, load_model
from vlm_r1.models.boxes import round_boxes, round_trip_error
from vlm_r1.models.tiny import build_tiny, get_builder

FAMILIES = tuple(family_names())

RELOAD_AND_GENERATE = r"""
import sys, torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
path = sys.argv[1]
model = AutoModelForImageTextToText.from_pretrained(path)
processor = AutoProcessor.from_pretrained(path)
processor.tokenizer.padding_side = "left"
sizes = [(97, 131), (200, 64), (64, 200), (131, 97)]
images = [Image.new("RGB", s, (40 * i, 200, 90)) for i, s in enumerate(sizes)]
messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"the red shape {i}"}]}]
            for i in range(4)]
texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
# One list of images per prompt: the form every processor reads unambiguously (Gemma 3's
# reads a flat list as all the images of one prompt).
batch = processor(text=texts, images=[[im] for im in images], padding=True, return_tensors="pt")
assert (batch["attention_mask"][:, -1] == 1).all(), "left padding expected"
torch.manual_seed(0)
out = model.generate(**batch, do_sample=True, temperature=1.0, max_new_tokens=8)
assert out.shape[0] == 4 and out.shape[1] > batch["input_ids"].shape[1]
print("OK", out.shape[1] - batch["input_ids"].shape[1])
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_reloads_in_fresh_process_with_auto_classes(family, tiny_path):
    path = tiny_path(family)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_AND_GENERATE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith("OK")
    assert "vlm_r1" not in RELOAD_AND_GENERATE


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = build_tiny("qwen2_5_vl", tmp_path / "a", "test", seed=3)
    b = build_tiny("qwen2_5_vl", tmp_path / "b", "test", seed=3)
    c = build_tiny("qwen2_5_vl", tmp_path / "c", "test", seed=4)
    assert _digest(a) == _digest(b)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert _digest(a) != _digest(c)


def test_a_recipe_replaces_the_sizes_and_is_recorded(tmp_path):
    import dataclasses
    import json

    from transformers import AutoConfig

    from vlm_r1.models.tiny.recipes import TINY_SIZES

    recipe = dataclasses.replace(TINY_SIZES["test"], layers=3, vision_depth=1)
    out = build_tiny("qwen2_5_vl", tmp_path / "m", "test", seed=0, recipe=recipe)
    config = AutoConfig.from_pretrained(out)
    assert config.text_config.num_hidden_layers == 3 and config.vision_config.depth == 1
    manifest = json.loads((out / "vlm_r1_tiny.json").read_text())
    assert manifest["size"] == "test" and manifest["recipe"]["layers"] == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_keeps_digits_punctuation_and_tags_atomic(family, tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path(family))
    text = '<think>ok</think><answer>[{"bbox_2d": [12, 305, 999, 7]}]</answer>'
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert tag in pieces
    for digit_or_punct in ["1", "2", "3", "0", "5", "9", "9", "7", "[", "{", ":", ","]:
        assert digit_or_punct in pieces
    assert not any(
        len(p) > 1 and any(ch.isdigit() for ch in p) for p in pieces if not p.startswith("<")
    )
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    for special in get_builder(family).special_tokens:
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_config_token_ids_point_at_local_tokenizer(family, tiny_path):
    from transformers import AutoConfig, AutoProcessor

    path = tiny_path(family)
    config = AutoConfig.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    # The token the model replaces with image features is what the processor writes for an
    # image, and a real token of the local vocabulary.
    batch = get_adapter(family).prepare_inputs(processor, [[Image.new("RGB", (64, 48))]], ["a"])
    assert (batch["input_ids"] == config.image_token_id).sum() > 0
    assert config.image_token_id != tok.unk_token_id
    assert config.get_text_config().vocab_size == len(tok)


@pytest.fixture(scope="module")
def processors(tiny_path):
    from transformers import AutoProcessor

    return {f: AutoProcessor.from_pretrained(tiny_path(f)) for f in FAMILIES}


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("size", [(97, 131), (200, 64), (33, 517), (640, 480)])
def test_model_input_size_matches_what_the_processor_does(family, size, processors):
    """The adapter's idea of the resized input must equal the real processor's grid."""
    processor = processors[family]
    adapter = get_adapter(family)
    out = processor.image_processor(images=[Image.new("RGB", size)], return_tensors="pt")
    _, gh, gw = out["image_grid_thw"][0].tolist()
    patch = processor.image_processor.patch_size
    assert adapter.model_input_size(processor, size) == (gw * patch, gh * patch)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    family=st.sampled_from(FAMILIES),
    w=st.integers(8, 1500),
    h=st.integers(8, 1500),
    frac=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_adapter_round_trip_within_one_pixel(processors, family, w, h, frac):
    if max(w, h) / min(w, h) > 150:
        return
    adapter = get_adapter(family)
    x1, x2 = sorted([frac[0] * w, frac[1] * w])
    y1, y2 = sorted([frac[2] * h, frac[3] * h])
    box = np.array([[x1, y1, x2, y2]])
    written = adapter.boxes_to_model(processors[family], (w, h), box)
    space = adapter.box_space(processors[family], (w, h))
    assert np.all(written == round_boxes(written, space))  # as the family writes them
    back = adapter.boxes_from_model(processors[family], (w, h), written)
    # Integers in model units cost half a unit: <= 1 original pixel unless the processor
    # downscaled the image by more than 2x (tiny max_pixels), where a unit spans > 2 pixels.
    bound = max(1.0, round_trip_error(adapter.box_space(processors[family], (w, h))))
    assert np.all(np.abs(back - box) <= bound + 1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_boxes_outside_the_image_are_clamped(family, processors):
    adapter = get_adapter(family)
    back = adapter.boxes_from_model(processors[family], (120, 80), [[-10, -10, 5000, 5000]])
    np.testing.assert_allclose(back, [[0, 0, 120, 80]])


def test_coordinate_systems_are_the_documented_ones():
    assert get_adapter("qwen2_5_vl").coordinate_system == "abs_resized"
    assert get_adapter("qwen2_vl").coordinate_system == "norm1000"
    assert get_adapter("qwen3_vl").coordinate_system == "norm1000"
    assert get_adapter("internvl").coordinate_system == "norm1000"


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_modules_and_lora_targets(family, tiny_path):
    import re

    adapter, model, _ = load_model(tiny_path(family))
    assert adapter.family == family
    vision = adapter.vision_parameters(model)
    assert vision and len(vision) < len(list(model.parameters()))
    pattern = re.compile(adapter.lora_target_regex())
    targets = [n for n, _ in model.named_modules() if pattern.match(n)]
    assert targets and not any(adapter.is_vision_module(n) for n in targets)
    assert all(n.rsplit(".", 1)[-1] in adapter.lora_targets for n in targets)


def test_unknown_family_names_the_choices():
    with pytest.raises(ModelLoadError, match=r"unknown model family 'llava9'.*qwen2_5_vl"):
        get_adapter("llava9")


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no checkpoint at"):
        detect_adapter(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="has no config.json"):
        detect_adapter(tmp_path)


def test_unsupported_model_type_names_what_is_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(
        ModelLoadError, match=r"model_type 'bert'.*supported model types: .*qwen2_5_vl"
    ):
        detect_adapter(tmp_path)


def test_flash_attention_without_backend_is_a_clear_error(tiny_path):
    with pytest.raises(ModelLoadError, match="flash_attention_2"):
        load_model(tiny_path("qwen2_5_vl"), attn_implementation="flash_attention_2")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tiny-model", "llava9", "--out", "x"], "unknown model family 'llava9'"),
    ],
)
def test_cli_errors_are_one_line(argv, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vlm_r1.cli", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_pixel_bounds_reach_the_image_processor(family, tiny_path):
    """model.max_pixels must change what the processor does, and the box space must follow."""
    import warnings

    adapter = get_adapter(family)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated min/max_pixels call kwargs
        processor = adapter.load_processor(tiny_path(family), max_pixels=64 * 64 * 4)
        out = processor.image_processor(images=[Image.new("RGB", (640, 480))], return_tensors="pt")
    _, gh, gw = out["image_grid_thw"][0].tolist()
    patch = processor.image_processor.patch_size
    assert gw * patch * gh * patch <= 64 * 64 * 4
    assert adapter.model_input_size(processor, (640, 480)) == (gw * patch, gh * patch)


def test_pixel_bounds_are_refused_for_a_tiling_family(tiny_path):
    with pytest.raises(ModelLoadError, match="Qwen-VL processor settings"):
        get_adapter("internvl").load_processor(tiny_path("internvl"), max_pixels=1000)


def test_cache_keys_follow_the_source_that_builds_the_checkpoint(tmp_path):
    from vlm_r1.models.tiny.build import source_digest

    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    before = source_digest(tmp_path / "pkg")
    assert source_digest(tmp_path / "pkg") == before
    (tmp_path / "pkg" / "notes.txt").write_text("edited, still not code")
    assert source_digest(tmp_path / "pkg") == before
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 3\n")  # a nested builder changes
    assert source_digest(tmp_path / "pkg") != before
