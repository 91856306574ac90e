"""Gemma 3: box convention, the chat prompt with Gemma's turn and image markers, stop and
placeholder tokens, the token types the training forward needs, and vision/LoRA selection on
the tiny model.

Expected strings and numbers are written out here by hand from the real checkpoint's format
(``google/gemma-3-4b-it``: chat template, ``Gemma3Processor.full_image_sequence``), not read
back from the code under test.
"""

import dataclasses
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_r1.models import ModelLoadError, load_model
from vlm_r1.models.gemma3 import Gemma3Adapter
from vlm_r1.models.tiny import build_tiny
from vlm_r1.models.tiny.gemma3 import image_side, image_tokens, layer_types
from vlm_r1.models.tiny.recipes import TINY_SIZES
from vlm_r1.policy.logprobs import completion_batch, completion_logprobs
from vlm_r1.policy.prompts import PreparedPrompt, stack_prompts
from vlm_r1.rl.rollout import generation_position_ids

FAMILY = "gemma3"
SIDE = 112  # the "test" recipe: sqrt(112 * 112) px square, patch 14 -> 8x8 patches
TOKENS = 16  # 8x8 patches average-pooled by 2 per side -> 4x4 soft tokens per image


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A freshly built tiny checkpoint (the module is imported above, so this works whether
    or not the family is in the registry tuples)."""
    return build_tiny(FAMILY, tmp_path_factory.mktemp("gemma3") / "tiny", "test", seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """``(adapter, model, processor)`` of that checkpoint, in eval mode."""
    adapter, model, processor = load_model(tiny_dir)
    model.eval()
    return adapter, model, processor


def image(width, height, shade=0):
    return Image.new("RGB", (width, height), (40 + shade, 200 - shade, 90))


def ids_of(processor, *tokens):
    return [processor.tokenizer.convert_tokens_to_ids(t) for t in tokens]


# ----------------------------------------------------------------------------- boxes
def test_boxes_are_0_1000_of_the_original_image(tiny):
    """Image 640 x 480, box (64, 120)-(400, 479) px: 64/640*1000 = 100, 120/480*1000 = 250,
    400/640*1000 = 625, 479/480*1000 = 997.9 -> 998; back: 998 * 480/1000 = 479.04 px."""
    adapter, _, processor = tiny
    assert adapter.coordinate_system == "norm1000"
    written = adapter.boxes_to_model(processor, (640, 480), [[64, 120, 400, 479]])
    np.testing.assert_array_equal(written, [[100, 250, 625, 998]])
    back = adapter.boxes_from_model(processor, (640, 480), written)
    np.testing.assert_allclose(back, [[64, 120, 400, 479.04]])


def test_every_image_is_resized_to_the_processors_square(tiny):
    """No aspect ratio survives: a tall and a wide image both become SIDE x SIDE pixels, what
    ``model_input_size`` reports (checked against the processor's own output)."""
    adapter, _, processor = tiny
    for size in [(97, 131), (640, 48)]:
        pixels = processor.image_processor(images=[image(*size)], return_tensors="pt")
        assert tuple(pixels["pixel_values"].shape[-2:]) == (SIDE, SIDE)
        assert adapter.model_input_size(processor, size) == (SIDE, SIDE)


def test_qwen_pixel_bounds_are_refused_by_name(tiny):
    adapter, _, processor = tiny
    with pytest.raises(ModelLoadError, match="fixed square"):
        adapter.set_pixel_bounds(processor, None, 64 * 64)


def test_flash_attention_is_refused_before_loading(tmp_path):
    """transformers marks Gemma 3 ``_supports_flash_attn = False``; the adapter says so
    without touching the (here nonexistent) checkpoint."""
    with pytest.raises(ModelLoadError, match="not supported by Gemma 3.*sdpa"):
        Gemma3Adapter().load(tmp_path / "nothing", attn_implementation="flash_attention_2")


# ----------------------------------------------------------------------------- prompt
def test_prompt_text_is_gemmas_chat_format(tiny):
    """<bos>, user/model turns, no system turn: the system text and a blank line open the user
    turn, an image is written <start_of_image>, text is stripped."""
    adapter, _, processor = tiny
    [text] = adapter.prompt_texts(processor, [1], ["  Where is the red circle? "], "Be brief.")
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>Where is the red circle?"
        "<end_of_turn>\n<start_of_turn>model\n"
    )
    [plain] = adapter.prompt_texts(processor, [2], ["two"])
    assert plain == (
        "<bos><start_of_turn>user\n<start_of_image><start_of_image>two<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_template_names_the_assistant_model_and_requires_alternation(tiny):
    _, _, processor = tiny
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello "}]},
    ]
    assert processor.apply_chat_template(chat, tokenize=False) == (
        "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n"
    )
    with pytest.raises(Exception, match="alternate"):
        processor.apply_chat_template([chat[1], chat[0]], tokenize=False)


def test_prompt_ids_have_one_bos_and_the_full_image_sequence(tiny):
    """Per image: \\n\\n <start_of_image> 16 x <image_soft_token> <end_of_image> \\n\\n, soft
    tokens typed 1 (they attend to each other bidirectionally) and everything else 0; a
    single <bos> although Gemma's tokenizer adds one itself (as the real one does)."""
    adapter, _, processor = tiny
    tok = processor.tokenizer
    bos, boi, soft, eoi = ids_of(
        processor, "<bos>", "<start_of_image>", "<image_soft_token>", "<end_of_image>"
    )
    assert tok("x")["input_ids"][0] == bos  # the tokenizer does prepend <bos> by default
    batch = adapter.prepare_inputs(processor, [[image(97, 131)]], ["find it"], "Be brief.")
    ids = batch["input_ids"][0].tolist()
    assert ids.count(bos) == 1 and ids[0] == bos
    start = ids.index(boi)
    assert ids[start + 1 : start + 1 + TOKENS] == [soft] * TOKENS
    assert ids[start + 1 + TOKENS] == eoi
    newlines = tok("\n\n", add_special_tokens=False)["input_ids"]
    assert ids[start - len(newlines) : start] == newlines
    assert ids[start + 2 + TOKENS : start + 2 + TOKENS + len(newlines)] == newlines
    types = batch["token_type_ids"][0]
    assert torch.equal(types, (batch["input_ids"][0] == soft).long())


def test_images_are_handed_to_the_processor_per_prompt(tiny):
    """``Gemma3Processor`` reads a flat image list as one prompt's images, so flat batching
    fails on two prompts; the adapter's nested lists work, 1 + 2 images."""
    adapter, _, processor = tiny
    images = [[image(97, 131)], [image(200, 64, 30), image(64, 64, 60)]]
    flat = dataclasses.replace(adapter, images_per_prompt=False)
    with pytest.raises(ValueError, match="number of <start_of_image> tokens"):
        flat.prepare_inputs(processor, images, ["one", "two"])
    batch = adapter.prepare_inputs(processor, images, ["one", "two"])
    assert batch["pixel_values"].shape == (3, 3, SIDE, SIDE)
    soft = ids_of(processor, "<image_soft_token>")[0]
    assert (batch["input_ids"] == soft).sum(-1).tolist() == [TOKENS, 2 * TOKENS]
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding


# ----------------------------------------------------------------------------- tokens
def test_stop_and_forbidden_ids_are_gemmas_tokens(tiny):
    adapter, model, processor = tiny
    tok = processor.tokenizer
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    assert adapter.stop_token_ids(tok) == [end_of_turn]
    assert model.generation_config.eos_token_id == end_of_turn
    forbidden = adapter.forbidden_token_ids(tok)
    assert tok.convert_ids_to_tokens(forbidden) == [
        "<start_of_image>",
        "<image_soft_token>",
        "<end_of_image>",
    ]
    # The same ids the model and processor use for the image sequence.
    config = model.config
    assert sorted(forbidden) == sorted(
        [config.boi_token_id, config.image_token_id, config.eoi_token_id]
    )
    assert tok.image_token_id == config.image_token_id and tok.boi_token_id == config.boi_token_id


# ----------------------------------------------------------------------------- tiny model
def test_tiny_model_keeps_gemma3s_shape(tiny):
    """Both attention kinds, a sliding window shorter than a prompt (so it is exercised), no
    logit soft-capping (null in the real config), 16 soft tokens, and a projector that is not
    zero (transformers' init would make the model blind to images)."""
    adapter, model, processor = tiny
    text = model.config.text_config
    assert set(text.layer_types) == {"sliding_attention", "full_attention"}
    assert text.final_logit_softcapping is None and text.attn_logit_softcapping is None
    assert model.config.mm_tokens_per_image == processor.image_seq_length == TOKENS
    rec = adapter.prompt("rec", "the red circle")  # VLM-R1's REC prompt, as in training
    batch = adapter.prepare_inputs(processor, [[image(97, 131)]], [rec])
    assert text.sliding_window < batch["input_ids"].shape[1]
    assert model.model.multi_modal_projector.mm_input_projection_weight.abs().sum() > 0


def test_recipe_sizes_are_the_documented_ones():
    test, demo = TINY_SIZES["test"], TINY_SIZES["demo"]
    assert (image_side(test), image_tokens(test)) == (112, 16)
    assert (image_side(demo), image_tokens(demo)) == (224, 64)
    assert layer_types(4) == ["sliding_attention", "full_attention"] * 2


def _prompt(adapter, processor, shade, question):
    features = adapter.prepare_inputs(processor, [[image(120, 90, shade)]], [question])
    features = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
    return PreparedPrompt(None, features, None, None, adapter)


def test_training_forward_gets_token_types_and_the_image_matters(tiny):
    """Completion tokens are typed 0 after the prompt's types; the log-probs depend on the
    image (another image changes them) and on the token types (dropping them turns the
    bidirectional image attention off and changes them too)."""
    adapter, model, processor = tiny
    pad = processor.tokenizer.pad_token_id
    prompts = [
        _prompt(adapter, processor, 0, "the red circle"),
        _prompt(adapter, processor, 0, "a"),
    ]
    ids = torch.tensor([[300, 301, 302], [303, 304, pad]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    batch = completion_batch(prompts, ids, mask, pad, "cpu")
    prompt_types = stack_prompts([p.features for p in prompts], pad)["token_type_ids"]
    assert torch.equal(batch["token_type_ids"][:, : prompt_types.shape[1]], prompt_types)
    assert (batch["token_type_ids"][:, prompt_types.shape[1] :] == 0).all()
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    with torch.no_grad():
        reference = completion_logprobs(model, prompts, ids, mask, pad)
        other = [_prompt(adapter, processor, 120, "the red circle"), prompts[1]]
        assert not torch.allclose(
            completion_logprobs(model, other, ids, mask, pad)[0], reference[0]
        )
        untyped = [
            PreparedPrompt(
                None,
                {k: v for k, v in p.features.items() if k != "token_type_ids"},
                None,
                None,
                adapter,
            )
            for p in prompts
        ]
        assert not torch.allclose(completion_logprobs(model, untyped, ids, mask, pad), reference)


def test_prefill_at_generation_positions_continues_like_the_full_forward(tiny):
    """A left-padded batch prefilled once and continued by one token (what shared-prefill
    rollouts do) must predict what the full forward predicts. ``generate`` numbers a padded
    row's tokens from its first real token; the prefill has to use the same positions
    (``rl.rollout.generation_position_ids``), or each padded row's keys are shifted."""
    adapter, model, processor = tiny
    batch = adapter.prepare_inputs(
        processor, [[image(97, 131)], [image(200, 64, 30)]], ["a", "the red circle " * 4]
    )
    mask = batch["attention_mask"]
    assert (mask[0] == 0).any()  # row 0 is padded
    positions = generation_position_ids(model, mask)
    expected = (mask.cumsum(-1) - 1).clamp(min=0) * mask
    assert torch.equal(positions, expected)

    def next_logits(prefix_positions):
        prefix = {k: v[:, :-1] if v.dim() == 2 else v for k, v in batch.items()}
        if prefix_positions is not None:
            prefix["position_ids"] = prefix_positions[:, :-1]
        with torch.no_grad():
            cache = model(**prefix, use_cache=True).past_key_values
            return model(
                input_ids=batch["input_ids"][:, -1:],
                attention_mask=mask,
                position_ids=positions[:, -1:],  # what generate() gives the next token
                cache=cache,
            ).logits[:, -1]

    with torch.no_grad():
        full = model(**batch).logits[:, -1]
    torch.testing.assert_close(next_logits(positions), full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(next_logits(None)[0], full[0], atol=1e-3)  # the shifted prefill


# ----------------------------------------------------------------------------- modules
def test_vision_tower_and_projector_freeze_and_lora_stays_in_the_language_model(tiny):
    adapter, model, _ = tiny
    names = [n for n, _ in model.named_parameters()]
    vision = {n for n, _ in adapter.vision_parameters(model)}
    expected = {
        n for n in names if n.startswith(("model.vision_tower.", "model.multi_modal_projector."))
    }
    assert vision == expected
    assert "model.multi_modal_projector.mm_input_projection_weight" in vision
    assert any(n.startswith("model.vision_tower.encoder.") for n in vision)
    pattern = re.compile(adapter.lora_target_regex())
    targets = {n for n, _ in model.named_modules() if pattern.match(n)}
    linears = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith("model.language_model.layers.")
    }
    assert targets == linears  # q/k/v/o and gate/up/down of every text layer, nothing else
    assert len(targets) == 7 * model.config.text_config.num_hidden_layers
    # SigLIP's own q/k/v projections carry the same names and must stay out.
    assert any(n.endswith("self_attn.q_proj") for n, _ in model.model.vision_tower.named_modules())


def test_builds_are_deterministic_per_seed(tiny_dir, tmp_path):
    """Same seed, same bytes (weights, the projector's re-initialisation included, and the
    tokenizer with its <bos> post-processor); another seed, other weights."""
    again = build_tiny(FAMILY, tmp_path / "again", "test", seed=0)
    for file in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (tiny_dir / file).read_bytes() == (again / file).read_bytes(), file
    other = build_tiny(FAMILY, tmp_path / "other", "test", seed=1)
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()
