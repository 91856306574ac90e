"""GLM-4.1V (``glm4v``): box convention, chat format, tokens, module selection, native answers.

Facts checked here and their sources: boxes are 0-1000 of the original image
(zai-org/GLM-V README, "Grounding"); the prompt is ``[gMASK]<sop><|user|>\\n<|begin_of_image|>
<|image|>...`` with ``<|assistant|>\\n`` to generate (transformers' GLM-4.1V integration test
ids); the checkpoint stops on ``<|endoftext|>``, ``<|user|>``, ``<|observation|>``
(generation_config 151329, 151336, 151338); ``Glm4vImageProcessor`` counts two temporal frames
against its pixel bounds (transformers ``glm4v`` ``smart_resize``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vlm_r1.models import get_adapter, load_model
from vlm_r1.models.glm4v import glm4v_resize
from vlm_r1.parsing import extract_answer, native_boxes, parse_boxes

FAMILY = "glm4v"


@pytest.fixture(scope="module")
def adapter():
    return get_adapter(FAMILY)


@pytest.fixture(scope="module")
def processor(tiny_path):
    return get_adapter(FAMILY).load_processor(tiny_path(FAMILY))


@pytest.fixture(scope="module")
def model(tiny_path):
    return load_model(tiny_path(FAMILY))[1]


# ----------------------------------------------------------------------------- boxes
def test_boxes_are_per_mille_of_the_original_image_whatever_the_resize(adapter, processor):
    """A 640x480 image is resized to a few dozen pixels, but the model writes 0-1000 of the
    original: x * 1000 / 640, y * 1000 / 480, rounded; back is the inverse (hand-computed)."""
    assert adapter.coordinate_system == "norm1000"
    assert adapter.model_input_size(processor, (640, 480)) != (640, 480)  # it is resized
    pixels = [[10, 20, 330, 470]]
    written = adapter.boxes_to_model(processor, (640, 480), pixels)
    # 10/640*1000 = 15.625, 20/480*1000 = 41.67, 330/640*1000 = 515.625, 470/480*1000 = 979.17
    np.testing.assert_array_equal(written, [[16, 42, 516, 979]])
    back = adapter.boxes_from_model(processor, (640, 480), written)
    np.testing.assert_allclose(back, [[10.24, 20.16, 330.24, 469.92]])


def test_native_answer_round_trips_to_pixels(adapter, processor):
    """What a perfect GLM-4.1V writes for a pixel box, in its own syntax, parses back to it."""
    written = adapter.boxes_to_model(processor, (200, 100), [[50, 25, 150, 75]])
    np.testing.assert_array_equal(written, [[250, 250, 750, 750]])
    x1, y1, x2, y2 = (int(v) for v in written[0])
    completion = (
        "<think>The circle is in the middle.</think>"
        f"<answer><|begin_of_box|>[{x1},{y1},{x2},{y2}]<|end_of_box|></answer>"
    )
    parsed = parse_boxes(extract_answer(completion).answer)
    assert parsed.status == "ok"
    back = adapter.boxes_from_model(processor, (200, 100), [parsed.boxes[0].box])
    np.testing.assert_allclose(back, [[50, 25, 150, 75]])


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 3000),
    w=st.integers(1, 3000),
    bounds=st.sampled_from([(6272, 25088), (3136, 12544), (12544, 9633792)]),
)
def test_resize_matches_transformers_glm4v_smart_resize(h, w, bounds):
    from transformers.models.glm4v.image_processing_glm4v import smart_resize

    if max(h, w) / min(h, w) > 100:
        return
    min_pixels, max_pixels = bounds
    expected = smart_resize(2, h, w, 2, 28, min_pixels, max_pixels)
    assert glm4v_resize(h, w, 28, min_pixels, max_pixels) == tuple(expected)


@pytest.mark.parametrize("size", [(97, 131), (200, 64), (20, 300), (640, 480), (12, 12)])
def test_model_input_size_matches_the_processor_grid(adapter, processor, size):
    out = processor.image_processor(images=[Image.new("RGB", size)], return_tensors="pt")
    _, gh, gw = out["image_grid_thw"][0].tolist()
    assert adapter.model_input_size(processor, size) == (gw * 14, gh * 14)


def test_pixel_bounds_bound_the_resized_area(adapter, tiny_path):
    """``max_pixels`` bounds height * width of the resized image, as for Qwen, although the
    GLM processor counts two temporal frames against its own bound."""
    processor = adapter.load_processor(tiny_path(FAMILY), min_pixels=28 * 28, max_pixels=56 * 56)
    assert processor.image_processor.size["longest_edge"] == 2 * 56 * 56
    out = processor.image_processor(images=[Image.new("RGB", (640, 480))], return_tensors="pt")
    _, gh, gw = out["image_grid_thw"][0].tolist()
    assert gh * 14 * gw * 14 <= 56 * 56
    assert adapter.model_input_size(processor, (640, 480)) == (gw * 14, gh * 14)
    with pytest.raises(ValueError, match="exceeds"):
        adapter.load_processor(tiny_path(FAMILY), min_pixels=100, max_pixels=10)


# ------------------------------------------------------------------------- prompts
def test_prompt_has_glm_turn_markers_and_image_placeholders(adapter, processor):
    (text,) = adapter.prompt_texts(processor, [1], ["Where is the red circle?"])
    assert text == (
        "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>"
        "Where is the red circle?<|assistant|>\n"
    )
    (with_system,) = adapter.prompt_texts(processor, [2], ["q"], system="Be brief.")
    assert with_system == (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\n"
        + "<|begin_of_image|><|image|><|end_of_image|>" * 2
        + "q<|assistant|>\n"
    )


def test_processed_prompt_ids_follow_the_real_layout(adapter, processor):
    """Token layout as in transformers' GLM-4.1V integration test: [gMASK] <sop> <|user|> \\n
    <|begin_of_image|> then one <|image|> per merged 2x2 patch; mm_token_type_ids marks them."""
    image = Image.new("RGB", (97, 131), (200, 30, 30))
    batch = adapter.prepare_inputs(processor, [[image]], ["q"])
    tok = processor.tokenizer
    ids = batch["input_ids"][0].tolist()
    t, gh, gw = batch["image_grid_thw"][0].tolist()
    n_image = t * gh * gw // 4
    head = ["[gMASK]", "<sop>", "<|user|>", "\n", "<|begin_of_image|>"]
    expected = [tok.convert_tokens_to_ids(x) for x in head[:3]] + tok("\n")["input_ids"]
    expected += [tok.convert_tokens_to_ids("<|begin_of_image|>")]
    expected += [tok.convert_tokens_to_ids("<|image|>")] * n_image
    expected += [tok.convert_tokens_to_ids("<|end_of_image|>")]
    assert ids[: len(expected)] == expected
    assert 4 <= n_image <= 16  # tiny: a few image tokens
    types = batch["mm_token_type_ids"][0]
    assert types.sum().item() == n_image
    assert (batch["input_ids"][0][types == 1] == tok.convert_tokens_to_ids("<|image|>")).all()


def test_stop_and_forbidden_ids_are_real_single_tokens(adapter, processor, tiny_path):
    import json

    tok = processor.tokenizer
    stops = adapter.stop_token_ids(tok)
    assert set(tok.convert_ids_to_tokens(stops)) == {"<|endoftext|>", "<|user|>", "<|observation|>"}
    forbidden = adapter.forbidden_token_ids(tok)
    assert set(tok.convert_ids_to_tokens(forbidden)) == set(adapter.placeholder_tokens)
    assert len(forbidden) == 6 and not set(forbidden) & set(stops)
    for token in (*adapter.placeholder_tokens, adapter.eos_token, "<|begin_of_box|>"):
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1
    config = json.loads((tiny_path(FAMILY) / "config.json").read_text())
    assert config["image_token_id"] == tok.convert_tokens_to_ids("<|image|>")
    assert config["image_start_token_id"] == tok.convert_tokens_to_ids("<|begin_of_image|>")
    assert config["text_config"]["vocab_size"] == len(tok)


def test_tiny_text_model_keeps_glm_rotary_layout(model):
    """Half-rotary attention (GLM-4: partial_rotary_factor 0.5), 3-D sections over it."""
    rope = model.config.text_config.rope_parameters
    assert rope["partial_rotary_factor"] == 0.5
    head_dim = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
    assert sum(rope["mrope_section"]) * 2 == head_dim // 2
    assert model.config.vision_config.out_hidden_size == model.config.text_config.hidden_size


# ------------------------------------------------------------------------- modules
def test_vision_tower_and_projector_are_the_frozen_set(adapter, model):
    vision = {n for n, _ in adapter.vision_parameters(model)}
    for part in ("patch_embed", "blocks.0", "downsample", "merger", "embeddings"):
        assert any(n.startswith(f"model.visual.{part}.") for n in vision), part
    rest = {n for n, _ in model.named_parameters()} - vision
    assert rest and all(n.startswith(("model.language_model.", "lm_head.")) for n in rest)
    assert all(n.startswith("model.visual.") for n in vision)


def test_lora_regex_matches_exactly_the_language_model_linears(adapter, model):
    pattern = re.compile(adapter.lora_target_regex())
    matched = {n for n, _ in model.named_modules() if pattern.match(n)}
    layers = model.config.text_config.num_hidden_layers
    expected = {
        f"model.language_model.layers.{i}.{m}"
        for i in range(layers)
        for m in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_up_proj",
            "mlp.down_proj",
        )
    }
    assert matched == expected
    # The vision merger has linears of the same names; they stay out.
    assert isinstance(model.model.visual.merger.down_proj, torch.nn.Linear)


# ---------------------------------------------------------------------- native syntax
@pytest.mark.parametrize(
    "answer, boxes",
    [
        ("<|begin_of_box|>[12, 34, 560, 780]<|end_of_box|>", [(12, 34, 560, 780)]),
        ("<|begin_of_box|>[[1,2,3,4],[5,6,7,8]]<|end_of_box|>", [(1, 2, 3, 4), (5, 6, 7, 8)]),
        ("<|begin_of_box|>(10, 20, 30, 40)<|end_of_box|>", [(10, 20, 30, 40)]),
        ("It is <|begin_of_box|><100,200,300,400><|end_of_box|>.", [(100, 200, 300, 400)]),
        (
            "<|begin_of_box|>[1,2,3,4]<|end_of_box|> and <|begin_of_box|>[5,6,7,8]<|end_of_box|>",
            [(1, 2, 3, 4), (5, 6, 7, 8)],
        ),
        ("<|begin_of_box|>[0.1, 0.25, 0.5, 0.75]<|end_of_box|>", [(0.1, 0.25, 0.5, 0.75)]),
    ],
)
def test_glm_box_markup_parses(answer, boxes):
    parsed = parse_boxes(answer)
    assert parsed.status == "ok"
    assert [b.box for b in parsed.boxes] == boxes


def test_glm_box_outside_answer_tags_and_think_boxes_ignored():
    """Read from the whole completion, only the marked box counts, not one in the reasoning."""
    completion = (
        "<think>Maybe [1, 2, 3, 4]? No.</think><|begin_of_box|>[[5, 6, 7, 8]]<|end_of_box|>"
    )
    answer = extract_answer(completion, require_tag=False).answer
    assert [b.box for b in parse_boxes(answer).boxes] == [(5, 6, 7, 8)]


def test_glm_boxed_non_box_answers_hold_no_box():
    assert native_boxes("<|begin_of_box|>B<|end_of_box|>") == []
    assert native_boxes("<|begin_of_box|>3<|end_of_box|>") == []
    assert native_boxes("<|begin_of_box|>[x1, y1, x2, y2]<|end_of_box|>") == []
    assert parse_boxes("<|begin_of_box|>B<|end_of_box|>").status == "malformed"


def test_glm_box_markup_with_json_keeps_labels():
    answer = '<|begin_of_box|>[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]<|end_of_box|>'
    (box,) = parse_boxes(answer).boxes
    assert box.box == (1, 2, 3, 4) and box.label == "cat"


def test_internvl_ref_box_markup_keeps_labels():
    answer = (
        "<ref>red circle</ref><box>[[10, 20, 30, 40]]</box> and "
        "<ref>blue squares</ref> <box>[[1, 2, 3, 4], [5, 6, 7, 8]]</box>, <box>[[9,9,9,9]]</box>"
    )
    parsed = parse_boxes(answer)
    assert [(b.box, b.label) for b in parsed.boxes] == [
        ((10, 20, 30, 40), "red circle"),
        ((1, 2, 3, 4), "blue squares"),
        ((5, 6, 7, 8), "blue squares"),
        ((9, 9, 9, 9), None),
    ]


def test_unclosed_and_hostile_markup_never_raises():
    assert [b.box for b in native_boxes("<|begin_of_box|>[1, 2, 3, 4")] == [(1, 2, 3, 4)]
    assert native_boxes("<|begin_of_box|>" * 5000) == []
    assert native_boxes("<box>" + "9" * 400 + ",1,2,3</box>") == []  # overflow: not finite
    assert len(native_boxes("<box>[[1,2,3,4]]</box>" * 1000)) == 300  # MAX_BOXES
    assert native_boxes('{"bbox_2d": [1, 2, 3, 4]}') == []  # plain JSON is not markup
