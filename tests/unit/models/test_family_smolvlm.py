"""SmolVLM: box convention, the chat prompt with SmolVLM's tiles, markers and turns, stop and
placeholder tokens, the one-frame-per-row layout the adapter gives the processor's output, the
vision/LoRA selection on the tiny model, and an ``idefics3`` checkpoint through the same adapter.

Expected strings and numbers are written out by hand from the real checkpoints' format
(``SmolVLMProcessor`` / ``SmolVLMImageProcessor`` in transformers, the hub chat template), not
read back from the code under test.
"""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_r1.models import ModelLoadError, load_model
from vlm_r1.models.smolvlm import SmolVLMAdapter, frames_as_rows
from vlm_r1.models.tiny.smolvlm import IMAGE_SEQ_LEN, TILE, smolvlm_chat_template
from vlm_r1.policy.image_features import SharedImageFeatures
from vlm_r1.policy.logprobs import completion_logprobs, shared_prefix_logprobs
from vlm_r1.policy.prompts import PreparedPrompt, stack_prompts

FAMILY = "smolvlm"
F = "<fake_token_around_image>"
T4 = "<image>" * 4  # one tile: 64 px / patch 16 = 4 x 4 patches, pixel-shuffled by 2 -> 4 tokens


@pytest.fixture(scope="module")
def tiny(tiny_path):
    """``(path, adapter, model, processor)``; the modules are imported above, so the cached
    build works whether or not the family is in the registry tuples yet."""
    path = tiny_path(FAMILY)
    adapter, model, processor = load_model(path)
    model.eval()
    return path, adapter, model, processor


def image(width, height, shade=0):
    return Image.new("RGB", (width, height), (200 - shade, 40 + shade, 90))


def test_tiny_sizes_are_the_documented_ones():
    assert (TILE, IMAGE_SEQ_LEN) == (64, 4) and T4.count("<image>") == IMAGE_SEQ_LEN


# ----------------------------------------------------------------------------- boxes
def test_boxes_are_0_1000_of_the_original_image(tiny):
    """Image 300 x 200, box (101, 0)-(299, 200) px: 101/300*1000 = 336.7 -> 337,
    299/300*1000 = 996.7 -> 997, y: 0 and 1000; back: 337 * 300/1000 = 101.1 px,
    997 * 0.3 = 299.1 px."""
    _, adapter, _, processor = tiny
    assert adapter.coordinate_system == "norm1000"
    written = adapter.boxes_to_model(processor, (300, 200), [[101, 0, 299, 200]])
    np.testing.assert_array_equal(written, [[337, 0, 997, 1000]])
    back = adapter.boxes_from_model(processor, (300, 200), written)
    np.testing.assert_allclose(back, [[101.1, 0, 299.1, 200]])
    # The box depends on the original image only, not on how the processor tiles it.
    assert adapter.box_space(processor, (300, 200)).model_size is None


def test_pixel_bounds_are_refused_for_the_tiling_processor(tiny):
    path, adapter, _, _ = tiny
    with pytest.raises(ModelLoadError, match="tiles images"):
        adapter.load_processor(path, max_pixels=64 * 64)


# ---------------------------------------------------------------------------- prompts
CONVERSATIONS = [
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}],
    [
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image"}]},
    ],
    [
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": " Two."}]},
        {"role": "user", "content": "And now?"},
    ],
]


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["image-first", "system", "turns"])
def test_chat_template_renders_like_the_real_one(conversation, tiny):
    """Oracle: the template transformers ships for SmolVLM2 checkpoints."""
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    tok = tiny[3].tokenizer

    def render(template):
        return tok.apply_chat_template(
            conversation, chat_template=template, tokenize=False, add_generation_prompt=True
        )

    assert render(smolvlm_chat_template()) == render(DEFAULT_CHAT_TEMPLATE)


def test_prompt_text_has_smolvlm_turns(tiny):
    _, adapter, _, processor = tiny
    [text] = adapter.prompt_texts(processor, [1], ["Where is it?"], system="Be terse.")
    assert text == (
        "<|im_start|>System: Be terse.<end_of_utterance>\n"
        "User:<image>Where is it?<end_of_utterance>\nAssistant:"
    )


def test_prompt_tokens_have_the_real_tiles_markers_and_turns(tiny):
    """131 x 97 px: longest edge to 128 -> 128 x 94, rounded up to whole 64-px tiles ->
    128 x 128: 2 x 2 tiles and the global image, 5 frames of 4 tokens each."""
    _, adapter, _, processor = tiny
    batch = adapter.prepare_inputs(processor, [[image(131, 97)]], ["the red shape"])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text == (
        f"<|im_start|>User:{F}<row_1_col_1>{T4}{F}<row_1_col_2>{T4}\n"
        f"{F}<row_2_col_1>{T4}{F}<row_2_col_2>{T4}\n"
        f"\n{F}<global-img>{T4}{F}"
        "the red shape<end_of_utterance>\nAssistant:"
    )
    assert tuple(batch["pixel_values"].shape) == (5, 1, 3, TILE, TILE)
    assert tuple(batch["pixel_attention_mask"].shape) == (5, 1, TILE, TILE)


def test_a_wide_image_is_one_row_of_tiles(tiny):
    """200 x 64 px: 128 x 40 -> 128 x 64 after rounding up: 1 x 2 tiles + global = 3 frames."""
    _, adapter, _, processor = tiny
    batch = adapter.prepare_inputs(processor, [[image(200, 64)]], ["x"])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert f"{F}<row_1_col_1>{T4}{F}<row_1_col_2>{T4}\n\n{F}<global-img>{T4}{F}x" in text
    assert "<row_2_col_1>" not in text
    assert batch["pixel_values"].shape[0] == 3


# ------------------------------------------------------------------------------ tokens
def test_stop_token_is_the_turn_end_and_the_eos(tiny):
    _, adapter, model, processor = tiny
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<end_of_utterance>")
    assert tok.eos_token == "<end_of_utterance>"
    assert adapter.stop_token_ids(tok) == [end]
    assert model.generation_config.eos_token_id == end


def test_forbidden_tokens_are_every_placeholder_the_processor_inserts(tiny):
    _, adapter, model, processor = tiny
    tok = processor.tokenizer
    forbidden = adapter.forbidden_token_ids(tok)
    # <image>, the fake token around images, <global-img> and the 6 x 6 tile markers.
    assert len(forbidden) == len(set(forbidden)) == 3 + 36
    assert model.config.image_token_id in forbidden
    names = set(tok.convert_ids_to_tokens(forbidden))
    assert {"<image>", F, "<global-img>", "<row_1_col_1>", "<row_6_col_6>"} <= names
    # Every special token of a real prompt is forbidden, except the turn markers.
    batch = adapter.prepare_inputs(processor, [[image(131, 97)]], ["the red shape"])
    special = {i for i in batch["input_ids"][0].tolist() if i in tok.all_special_ids}
    turn = set(tok.convert_tokens_to_ids(["<|im_start|>", "<end_of_utterance>"]))
    assert special - turn <= set(forbidden) and not turn & set(forbidden)


# ------------------------------------------------------------------------------ layout
def test_frames_as_rows_keeps_real_frames_in_order():
    """Prompt 0 has 3 frames, prompt 1 has 1 frame and 2 all-zero padding frames."""
    values = torch.zeros(2, 3, 3, 2, 2)
    for b, n, v in [(0, 0, 1.0), (0, 1, 2.0), (0, 2, -3.0), (1, 0, 4.0)]:
        values[b, n] = v
    mask = torch.zeros(2, 3, 2, 2, dtype=torch.long)
    mask[0] = 1
    mask[1, 0] = 1
    rows, row_mask = frames_as_rows(values, mask)
    assert tuple(rows.shape) == (4, 1, 3, 2, 2) and tuple(row_mask.shape) == (4, 1, 2, 2)
    assert rows[:, 0, 0, 0, 0].tolist() == [1.0, 2.0, -3.0, 4.0]
    assert bool(row_mask.bool().all())
    with pytest.raises(ValueError, match="frames"):
        frames_as_rows(values[0], mask[0])


def test_one_frame_per_row_computes_what_the_processor_layout_computes(tiny):
    """A prompt with two images (5 + 3 frames) and one with one (3 frames): the processor pads
    to [2, 8, ...]; the adapter's 11 rows, and the prompts prepared apart and stacked, give the
    same logits."""
    _, adapter, model, processor = tiny
    images = [[image(131, 97), image(200, 64, 60)], [image(64, 200, 30)]]
    texts = ["the red shape", "the green one"]
    prompts = adapter.prompt_texts(processor, [2, 1], texts)
    native = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    assert tuple(native["pixel_values"].shape[:2]) == (2, 8)
    rows = adapter.prepare_inputs(processor, images, texts)
    assert rows["pixel_values"].shape[0] == 11
    apart = [
        adapter.prepare_inputs(processor, [im], [t]) for im, t in zip(images, texts, strict=True)
    ]
    stacked = stack_prompts(
        [{k: v for k, v in b.items() if isinstance(v, torch.Tensor)} for b in apart],
        processor.tokenizer.pad_token_id,
    )
    with torch.no_grad():
        expected = model(**native).logits
        got = model(**rows).logits
        got_stacked = model(**stacked).logits
        # Not vacuous: the same frames in another order give other logits.
        swapped = {**rows, "pixel_values": rows["pixel_values"].flip(0)}
        wrong = model(**swapped).logits
    assert (expected - got).abs().max() <= 1e-5
    assert (expected - got_stacked).abs().max() <= 1e-5
    assert (expected - wrong).abs().max() > 1e-4


# ------------------------------------------------------------------------------ modules
def test_vision_tower_and_connector_are_frozen_and_lora_reaches_only_the_text_model(tiny):
    _, adapter, model, _ = tiny
    names = [n for n, _ in model.named_parameters()]
    vision = {n for n in names if n.startswith(("model.vision_model.", "model.connector."))}
    assert "model.connector.modality_projection.proj.weight" in vision
    assert {n for n, _ in adapter.vision_parameters(model)} == vision
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    # The SigLIP tower has q/k/v projections too: the regex must keep LoRA out of them.
    assert any(n.startswith("model.vision_model.") and n.endswith(".q_proj") for n in linears)
    pattern = re.compile(adapter.lora_target_regex())
    text_targets = {
        n
        for n in linears
        if n.startswith("model.text_model.") and n.rsplit(".", 1)[-1] in adapter.lora_targets
    }
    assert len(text_targets) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert {n for n in linears if pattern.match(n)} == text_targets
    # The same under PEFT's wrapper names.
    wrapped = {f"base_model.model.{n}" for n in linears if pattern.match(f"base_model.model.{n}")}
    assert wrapped == {f"base_model.model.{n}" for n in text_targets}


# ------------------------------------------------------------------------------ idefics3
@pytest.fixture(scope="module")
def idefics3(tiny, tmp_path_factory):
    """The tiny SmolVLM's weights and tokenizer as an ``idefics3`` checkpoint (the model type
    of the first SmolVLM releases): same sizes, Idefics3's own config, model and processor."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    path, _, smol, processor = tiny
    config = Idefics3Config(
        vision_config=smol.config.vision_config.to_dict(),
        text_config=smol.config.text_config.to_dict(),
        scale_factor=smol.config.scale_factor,
        image_token_id=smol.config.image_token_id,
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config)
    model.load_state_dict(smol.state_dict(), strict=True)
    ip = processor.image_processor
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=True, size=dict(ip.size), max_image_size=dict(ip.max_image_size)
    )
    out = tmp_path_factory.mktemp("idefics3") / "tiny"
    model.save_pretrained(out)
    Idefics3Processor(
        image_processor=image_processor,
        tokenizer=processor.tokenizer,
        image_seq_len=processor.image_seq_len,
        chat_template=processor.chat_template,
    ).save_pretrained(out)
    return out


def test_an_idefics3_checkpoint_gets_this_adapter_and_computes_the_same(tiny, idefics3):
    _, _, smol, smol_processor = tiny
    adapter, model, processor = load_model(idefics3)
    model.eval()
    assert isinstance(adapter, SmolVLMAdapter) and adapter.family == FAMILY
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    vision = ("model.vision_model.", "model.connector.")
    assert {n for n, _ in adapter.vision_parameters(model)} == {
        n for n, _ in model.named_parameters() if n.startswith(vision)
    }
    images, texts = [[image(131, 97)], [image(200, 64, 60)]], ["the red shape", "the green one"]
    batch = adapter.prepare_inputs(processor, images, texts)
    smol_batch = adapter.prepare_inputs(smol_processor, images, texts)
    assert torch.equal(batch["input_ids"], smol_batch["input_ids"])
    assert torch.equal(batch["pixel_values"], smol_batch["pixel_values"])
    with torch.no_grad():
        got = model(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits
        expected = smol(**smol_batch).logits
    assert (got - expected).abs().max() <= 1e-5


def test_idefics3_shared_features_and_prefix_equal_the_plain_path(tiny, idefics3):
    """The shared-work paths (policy/image_features.py, shared_prefix_logprobs) on an idefics3
    model, whose prompts may carry ``mm_token_type_ids``: the numbers of the plain path."""
    adapter, model, processor = load_model(idefics3)
    model.eval()
    prompts = []
    for im, text in [(image(131, 97), "a"), (image(64, 200, 30), "bb"), (image(90, 90), "c")]:
        batch = adapter.prepare_inputs(processor, [[im]], [text])
        features = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        prompts.append(PreparedPrompt(None, features, None, im.size, adapter))
    # 2 x 2 tiles + global; a tall image: 2 x 1 tiles + global; 2 x 2 + global again.
    assert [p.features["pixel_values"].shape[0] for p in prompts] == [5, 3, 5]
    rows = [0, 0, 1, 2, 2]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 600, (len(rows), 6), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        plain = completion_logprobs(model, [prompts[r] for r in rows], ids, mask, pad)
        shared = SharedImageFeatures.encode(model, prompts)
        features = completion_logprobs(
            model, [prompts[r] for r in rows], ids, mask, pad, image_features=shared.for_rows(rows)
        )
        prefix = shared_prefix_logprobs(
            model, prompts, rows, ids, mask, pad, image_features=shared.for_rows([0, 1, 2])
        )
    m = mask.bool()
    assert (plain - features)[m].abs().max() <= 1e-5
    assert (plain - prefix)[m].abs().max() <= 1e-5
