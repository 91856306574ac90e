"""Shared-prefill generation (image encoded and prompt prefilled once per group) must give the
same tokens as plain generation of the G repeated prompts."""

import pytest
import torch

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import family_names, load_model
from vlm_r1.policy.prompts import prepare_prompt
from vlm_r1.rl.rollout import HFRollout, SamplingParams


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("prefill")
    return list(
        read_samples(
            str(write_shapes(out, 3, 0, seed=4, image_size="97..211", tasks=["rec"])["rec_train"])
        )
    )


@pytest.mark.parametrize("family", family_names())
def test_shared_prefill_matches_plain_generation(family, tiny_path, samples):
    adapter, model, processor = load_model(tiny_path(family))
    model.eval()
    tok = processor.tokenizer
    eos = [tok.convert_tokens_to_ids(adapter.eos_token)]
    shared = HFRollout(
        processor, eos, tok.pad_token_id, adapter.forbidden_token_ids(tok), shared_prefill=True
    )
    plain = HFRollout(
        processor, eos, tok.pad_token_id, adapter.forbidden_token_ids(tok), shared_prefill=False
    )
    params = SamplingParams(num_generations=4, max_new_tokens=12)
    greedy = SamplingParams(num_generations=4, max_new_tokens=12, greedy=True)
    with torch.no_grad():
        for sample in samples:
            features = prepare_prompt(adapter, processor, sample).features
            greedy_shared = shared.generate_group(model, features, 0, greedy)
            greedy_plain = plain.generate_group(model, features, 0, greedy)
            assert shared.shared_prefill, "shared prefill fell back to the plain path"
            assert torch.equal(greedy_shared, greedy_plain)
            sampled_shared = shared.generate_group(model, features, 7, params)
            sampled_plain = plain.generate_group(model, features, 7, params)
            assert torch.equal(sampled_shared, sampled_plain)
