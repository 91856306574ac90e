"""LLaVA-OneVision: box convention, prompt and placeholders, AnyRes token counts and the
packed pixel layout, stop/forbidden tokens, and vision/LoRA module selection on the tiny model.

Token counts are computed here by hand from the AnyRes rules (transformers
``select_best_resolution`` / ``unpad_image``); the tiny checkpoint tiles at 28 px with patch 14
(4 tokens per view) on the grids ``1x1 1x2 2x1 2x2 1x3 3x1``.
"""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_r1.models import load_model
from vlm_r1.models.boxes import from_model
from vlm_r1.models.llava_onevision import LlavaOnevisionAdapter, pack_tiles, tiles_per_image
from vlm_r1.policy.image_features import SharedImageFeatures
from vlm_r1.policy.logprobs import completion_logprobs
from vlm_r1.policy.prompts import stack_prompts

FAMILY = "llava_onevision"


@pytest.fixture(scope="module")
def tiny(tiny_path):
    """``(adapter, model, processor)`` of the cached tiny checkpoint, in eval mode."""
    adapter, model, processor = load_model(tiny_path(FAMILY))
    model.eval()
    return adapter, model, processor


def image(width, height, shade=0):
    return Image.new("RGB", (width, height), (40 + shade, 200, 90))


# ----------------------------------------------------------------------------- boxes
def test_boxes_are_0_1_of_the_original_image(tiny):
    """Image 640 x 480, box (100, 37)-(333, 479) px: 100/640 = 0.15625, 37/480 = 0.07708,
    333/640 = 0.52031, 479/480 = 0.99792, written with 3 decimals; back: 0.156 * 640 = 99.84,
    0.077 * 480 = 36.96, 0.52 * 640 = 332.8, 0.998 * 480 = 479.04."""
    adapter, _, processor = tiny
    assert adapter.coordinate_system == "norm1"
    written = adapter.boxes_to_model(processor, (640, 480), [[100, 37, 333, 479]])
    np.testing.assert_allclose(written, [[0.156, 0.077, 0.52, 0.998]])
    back = adapter.boxes_from_model(processor, (640, 480), written)
    np.testing.assert_allclose(back, [[99.84, 36.96, 332.8, 479.04]])


def test_a_two_decimal_llava_answer_maps_back_exactly(tiny):
    """LLaVA-1.5-style region answers have two decimals: [0.16, 0.08, 0.52, 1.0] on 640 x 480
    is (102.4, 38.4)-(332.8, 480) px; a coordinate past 1 is clamped to the image edge."""
    adapter, _, processor = tiny
    back = adapter.boxes_from_model(processor, (640, 480), [[0.16, 0.08, 0.52, 1.0]])
    np.testing.assert_allclose(back, [[102.4, 38.4, 332.8, 480.0]])
    np.testing.assert_allclose(
        from_model([[0.5, 0.5, 1.3, 1.2]], adapter.box_space(processor, (640, 480))),
        [[320, 240, 640, 480]],
    )


# ----------------------------------------------------------------------------- prompt
def test_prompt_is_the_hf_chatml_with_one_image_placeholder(tiny):
    adapter, _, processor = tiny
    [text] = adapter.prompt_texts(processor, [1], ["find the red circle"])
    assert text == (
        "<|im_start|>user\n<image>\nfind the red circle<|im_end|>\n<|im_start|>assistant\n"
    )
    [with_system] = adapter.prompt_texts(
        processor, [2], ["q"], system="You are a helpful assistant."
    )
    assert with_system == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\n<image>\nq<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    ("size", "tokens"),
    [
        # (w, h) = (131, 97): best grid 2x2 (56 x 56: scale 0.427, 41 x 56 px kept); features
        # 4 x 4, unpadded to round(97 * 4/131) = 2 rows (1 cut above and below) -> 2 x 4 = 8,
        # + 2 newlines + 4 base tokens = 14.
        ((131, 97), 14),
        # (200, 64): best grid 1x3 (28 x 84: scale 0.42, 26 x 84 px kept); features 2 x 6,
        # round(64 * 6/200) = 1 row -> (2 - 1) // 2 = 0 cut -> 12 + 2 newlines + 4 = 18.
        ((200, 64), 18),
        # (64, 200): the transpose, grid 3x1; features 6 x 2 -> 12 + 6 newlines + 4 = 22.
        ((64, 200), 22),
        # (30, 30): every grid covers the 900 px, 2x2 (56 x 56) alone without downscaling;
        # features 4 x 4, square, nothing cut -> 16 + 4 newlines + 4 = 24.
        ((30, 30), 24),
    ],
)
def test_image_token_count_follows_anyres_by_hand(tiny, size, tokens):
    adapter, model, processor = tiny
    batch = adapter.prepare_inputs(processor, [[image(*size)]], ["q"])
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"] == image_id).sum()) == tokens
    with torch.no_grad():
        out = model.get_image_features(
            **{k: batch[k] for k in adapter.encoder_inputs}, return_dict=True
        )
    assert [t.shape[0] for t in out.pooler_output] == [tokens]


def test_multi_image_prompt_is_not_tiled(tiny):
    """Two images in one prompt: one view each (4 tokens) + one newline = 5 tokens per image,
    as ``batch_num_images`` tells the processor and the model."""
    adapter, model, processor = tiny
    batch = adapter.prepare_inputs(processor, [[image(131, 97), image(200, 64, 30)]], ["q"])
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"] == image_id).sum()) == 10
    assert batch["batch_num_images"].tolist() == [2]
    assert batch["pixel_values"].shape[0] == 2
    assert adapter.encoder_units(batch) == 2


# ----------------------------------------------------------------------------- packed pixels
def test_tile_counts_and_packing_match_the_processor_padding(tiny):
    """(131, 97) has 1 + 4 views, (200, 64) 1 + 3; processed together the second is padded
    with one zero view, which packing drops; the model's own 5-D path gives the same features."""
    adapter, model, processor = tiny
    images = [image(131, 97), image(200, 64, 30)]
    raw = processor.image_processor(images=images, return_tensors="pt")
    assert tuple(raw["pixel_values"].shape[:2]) == (2, 5)
    counts = tiles_per_image(
        raw["image_sizes"].tolist(), [1, 1], processor.image_processor.image_grid_pinpoints, 28
    )
    assert counts == [5, 4]
    packed = pack_tiles(raw["pixel_values"], counts)
    assert packed.shape[0] == 9
    assert torch.equal(packed[5:], raw["pixel_values"][1, :4])
    assert raw["pixel_values"][1, 4].abs().sum() == 0  # the padding view that was dropped
    with torch.no_grad():
        five_d = model.get_image_features(raw["pixel_values"], raw["image_sizes"]).pooler_output
        four_d = model.get_image_features(packed, raw["image_sizes"]).pooler_output
    for a, b in zip(five_d, four_d, strict=True):
        torch.testing.assert_close(a, b)


def test_prompts_with_different_tile_counts_stack(tiny):
    """Packed, two prompts' pixels concatenate (5-D padded ones of 5 and 4 views would not)
    and the stacked forward gives each prompt's own logits."""
    adapter, model, processor = tiny
    one = adapter.prepare_inputs(processor, [[image(131, 97)]], ["a"])
    two = adapter.prepare_inputs(processor, [[image(200, 64, 30)]], ["b"])
    pad = processor.tokenizer.pad_token_id
    feats = [{k: v for k, v in f.items()} for f in (one, two)]
    both = stack_prompts(feats, pad)
    assert both["pixel_values"].shape[0] == 5 + 4
    with torch.no_grad():
        stacked = model(**both).logits[:, -1]
        alone = torch.cat([model(**f).logits[:, -1] for f in feats])
    torch.testing.assert_close(stacked, alone, atol=1e-5, rtol=1e-5)


def test_shared_features_of_a_multi_image_prompt_match_the_plain_forward(tiny):
    """``batch_num_images`` is an encoder input: without it the encoder would tile the two
    images of the first prompt and its features would not fit the prompt's 10 tokens."""
    from vlm_r1.data.sample import Sample
    from vlm_r1.policy.prompts import PreparedPrompt

    adapter, model, processor = tiny
    prompts = []
    for images in ([image(131, 97), image(64, 200, 60)], [image(200, 64, 30)]):
        batch = adapter.prepare_inputs(processor, [images], ["q"])
        features = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        sample = Sample(id="x", images=(), question="q", solution="a", task="qa")
        prompts.append(PreparedPrompt(sample, features, None, None, adapter))
    ids = torch.tensor([[300, 301, 302], [303, 304, 305]])
    mask = torch.ones_like(ids)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        shared = SharedImageFeatures.encode(model, prompts)
        assert [len(p.pooler) for p in shared.per_prompt] == [2, 1]
        plain = completion_logprobs(model, prompts, ids, mask, pad)
        reused = completion_logprobs(
            model, prompts, ids, mask, pad, image_features=shared.for_rows([0, 1])
        )
    torch.testing.assert_close(plain, reused, atol=1e-5, rtol=1e-5)


def test_packing_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="counts 3 images"):
        tiles_per_image([[10, 10], [10, 10]], [3], [[28, 28]], 28)
    with pytest.raises(ValueError, match="do not fit"):
        pack_tiles(torch.zeros(1, 2, 3, 4, 4), [3])
    with pytest.raises(ValueError, match="expected pixel_values"):
        pack_tiles(torch.zeros(2, 3, 4, 4), [1, 1])


# ----------------------------------------------------------------------------- tokens
def test_stop_and_forbidden_ids_are_real_tokens(tiny):
    adapter, model, processor = tiny
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert adapter.stop_token_ids(tok) == [im_end]
    forbidden = adapter.forbidden_token_ids(tok)
    assert forbidden == [tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<video>")]
    assert tok.unk_token_id not in forbidden and len(set(forbidden)) == 2
    assert model.config.image_token_id == forbidden[0]
    assert model.config.video_token_id == forbidden[1]
    for token in ("<image>", "<video>", "<|im_end|>"):
        assert tok.convert_ids_to_tokens(tok(token, add_special_tokens=False)["input_ids"]) == [
            token
        ]


# ----------------------------------------------------------------------------- modules
def test_vision_side_is_tower_projector_and_image_newline(tiny):
    adapter, model, _ = tiny
    names = [n for n, _ in model.named_parameters()]
    vision = {n for n, _ in adapter.vision_parameters(model)}
    expected = {
        n
        for n in names
        if n.startswith(
            ("model.vision_tower.", "model.multi_modal_projector.", "model.image_newline")
        )
    }
    assert "model.image_newline" in vision
    assert any(n.startswith("model.multi_modal_projector.") for n in vision)
    assert vision == expected
    assert not any(n.startswith("model.language_model.") for n in vision)


def test_lora_regex_matches_only_language_model_linears(tiny):
    """SigLIP's attention also has q_proj/k_proj/v_proj: the regex must leave them alone."""
    adapter, model, _ = tiny
    pattern = re.compile(adapter.lora_target_regex())
    matched = {n for n, _ in model.named_modules() if pattern.match(n)}
    linears = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in adapter.lora_targets
    }
    language = {n for n in linears if n.startswith("model.language_model.")}
    assert any(n.startswith("model.vision_tower.") for n in linears)  # the exclusion matters
    assert matched == language
    assert len(language) == model.config.text_config.num_hidden_layers * 7


def test_adapter_is_found_from_the_checkpoint_model_type(tiny):
    adapter, model, _ = tiny
    assert isinstance(adapter, LlavaOnevisionAdapter)
    assert model.config.model_type == "llava_onevision"
