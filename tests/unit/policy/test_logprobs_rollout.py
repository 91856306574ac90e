import pytest
import torch

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import family_names, load_model
from vlm_r1.policy.logprobs import completion_logprobs, token_logprobs
from vlm_r1.policy.prompts import prepare_prompt, stack_prompts
from vlm_r1.rl.rollout import HFRollout, SamplingParams, completion_mask


@pytest.fixture(scope="module")
def rec_samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    files = write_shapes(out, n_train=6, n_eval=0, seed=1, image_size="96..200", tasks=["rec"])
    return list(read_samples(str(files["rec_train"])))


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5], [2, 9, 9, 9, 9]])
    mask, truncated = completion_mask(ids, [2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_token_logprobs_equals_log_softmax():
    logits = torch.randn(2, 3, 11)
    tokens = torch.randint(0, 11, (2, 3))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, tokens, 0.7), expected)


@pytest.mark.parametrize("family", family_names())
def test_logprobs_batched_equals_one_by_one_and_full_forward(family, tiny_path, rec_samples):
    adapter, model, processor = load_model(tiny_path(family))
    tok = processor.tokenizer
    prompts = [prepare_prompt(adapter, processor, s) for s in rec_samples[:3]]
    eos = [tok.convert_tokens_to_ids(adapter.eos_token)]
    backend = HFRollout(processor, eos, tok.pad_token_id, adapter.forbidden_token_ids(tok))
    rollout = backend.generate(model, prompts, [1, 2, 3], SamplingParams(3, 10))
    assert rollout.completion_ids.shape[0] == 9
    forbidden = set(adapter.forbidden_token_ids(tok))
    assert not forbidden & set(rollout.completion_ids[rollout.completion_mask.bool()].tolist())
    rows = [rollout.prompt_of(i) for i in range(9)]
    with torch.no_grad():
        batched = completion_logprobs(
            model, rows, rollout.completion_ids, rollout.completion_mask, tok.pad_token_id
        )
        single = torch.cat(
            [
                completion_logprobs(
                    model,
                    [rows[i]],
                    rollout.completion_ids[i : i + 1],
                    rollout.completion_mask[i : i + 1],
                    tok.pad_token_id,
                )
                for i in range(9)
            ]
        )
        # Reference: one full forward (LM head over every position) of prompt + completion.
        i = 4
        batch = stack_prompts([rows[i].features], tok.pad_token_id)
        length = int(rollout.completion_mask[i].sum())
        ids = torch.cat([batch["input_ids"], rollout.completion_ids[i : i + 1, :length]], 1)
        full = {**batch, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "mm_token_type_ids" in full:
            full["mm_token_type_ids"] = torch.cat(
                [batch["mm_token_type_ids"], torch.zeros(1, length, dtype=torch.long)], 1
            )
        logits = model(**full).logits[0, batch["input_ids"].shape[1] - 1 : -1]
        reference = torch.log_softmax(logits.float(), -1).gather(-1, ids[0, -length:, None])[:, 0]
    mask = rollout.completion_mask.bool()
    assert (batched - single)[mask].abs().max() <= 1e-5
    assert (batched[i, :length] - reference).abs().max() <= 1e-5


def test_same_seed_same_rollout_regardless_of_batching(tiny_path, rec_samples):
    adapter, model, processor = load_model(tiny_path("qwen2_5_vl"))
    tok = processor.tokenizer
    prompts = [prepare_prompt(adapter, processor, s) for s in rec_samples[:2]]
    backend = HFRollout(processor, [tok.convert_tokens_to_ids(adapter.eos_token)], tok.pad_token_id)
    params = SamplingParams(4, 8)
    together = backend.generate(model, prompts, [11, 12], params)
    apart = [
        backend.generate(model, [p], [s], params) for p, s in zip(prompts, [11, 12], strict=True)
    ]
    assert together.texts == apart[0].texts + apart[1].texts
