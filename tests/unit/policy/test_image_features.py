"""Shared image features (each prompt's images encoded once for its G completions) must give
the same per-token log-probs and the same gradients as the naive path that repeats the image."""

import pytest
import torch

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import family_names, load_model
from vlm_r1.policy.image_features import SharedImageFeatures
from vlm_r1.policy.logprobs import completion_logprobs, shared_prefix_logprobs
from vlm_r1.policy.prompts import prepare_prompt

G = 3


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("features")
    path = write_shapes(out, 3, 0, seed=5, image_size="97..211", tasks=["rec"])["rec_train"]
    return list(read_samples(str(path)))


def _batch(family, tiny_path, samples):
    torch.manual_seed(0)
    adapter, model, processor = load_model(tiny_path(family))
    model.eval()  # no dropout: both paths must see the same function
    prompts = [prepare_prompt(adapter, processor, s) for s in samples]
    rows = len(prompts) * G
    forbidden = set(adapter.forbidden_token_ids(processor.tokenizer))
    allowed = torch.tensor([i for i in range(200, 600) if i not in forbidden])
    ids = allowed[torch.randint(len(allowed), (rows, 7))]
    lengths = torch.randint(2, 8, (rows,))
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id)
    weights = torch.randn(rows, 7)
    return model, processor, prompts, ids, mask, weights


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _naive(model, pad, prompts, ids, mask, weights, chunks):
    model.zero_grad()
    parts = []
    for rows in chunks:
        logps = completion_logprobs(
            model, [prompts[r // G] for r in rows], ids[rows], mask[rows], pad
        )
        (logps * weights[rows] * mask[rows]).sum().backward()
        parts.append(logps.detach())
    return torch.cat(parts), _grads(model)


def _shared(model, pad, prompts, ids, mask, weights, chunks):
    model.zero_grad()
    shared = SharedImageFeatures.encode(model, prompts).trainable()
    parts = []
    for rows in chunks:
        logps = completion_logprobs(
            model,
            [prompts[r // G] for r in rows],
            ids[rows],
            mask[rows],
            pad,
            image_features=shared.for_rows([r // G for r in rows]),
        )
        (logps * weights[rows] * mask[rows]).sum().backward()
        parts.append(logps.detach())
    shared.backward()
    return torch.cat(parts), _grads(model)


@pytest.mark.parametrize("family", family_names())
def test_shared_features_match_repeated_images(family, tiny_path, samples):
    model, processor, prompts, ids, mask, weights = _batch(family, tiny_path, samples)
    pad = processor.tokenizer.pad_token_id
    # Micro-batches that cut through groups: the shared features are read by several backwards.
    chunks = [[0, 1, 2, 3], [4, 5, 6], [7, 8]]
    naive_logps, naive_grads = _naive(model, pad, prompts, ids, mask, weights, chunks)
    shared_logps, shared_grads = _shared(model, pad, prompts, ids, mask, weights, chunks)
    m = mask.bool()
    assert (naive_logps[m] - shared_logps[m]).abs().max() <= 1e-5
    assert naive_grads.keys() == shared_grads.keys()
    vision = [n for n in naive_grads if "visual" in n or "vision" in n]
    assert vision, "the vision tower received no gradient: the test would not see a wrong one"
    assert_gradients_close(naive_grads, shared_grads)


@pytest.mark.parametrize("family", family_names())
def test_frozen_features_reused_without_grad(family, tiny_path, samples):
    model, processor, prompts, ids, mask, _ = _batch(family, tiny_path, samples)
    pad = processor.tokenizer.pad_token_id
    rows = list(range(len(prompts) * G))
    with torch.no_grad():
        shared = SharedImageFeatures.encode(model, prompts)
        expected = completion_logprobs(model, [prompts[r // G] for r in rows], ids, mask, pad)
        got = completion_logprobs(
            model,
            [prompts[r // G] for r in rows],
            ids,
            mask,
            pad,
            image_features=shared.for_rows([r // G for r in rows]),
        )
    m = mask.bool()
    assert (expected[m] - got[m]).abs().max() <= 1e-5


def test_wrong_features_change_logprobs(tiny_path, samples):
    """The equality above is not vacuous: image features in another order change the log-probs."""
    model, processor, prompts, ids, mask, _ = _batch("qwen2_5_vl", tiny_path, samples)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        shared = SharedImageFeatures.encode(model, prompts)
        right = completion_logprobs(
            model, [prompts[0]], ids[:1], mask[:1], pad, image_features=shared.for_rows([0])
        )
        swapped = shared.per_prompt[0]
        shared.per_prompt[0] = type(swapped)([t.flip(0) for t in swapped.pooler], None)
        wrong = completion_logprobs(
            model, [prompts[0]], ids[:1], mask[:1], pad, image_features=shared.for_rows([0])
        )
    assert (right - wrong).abs().max() > 1e-4


def _prefix_shared(model, pad, prompts, ids, mask, weights, chunks, share_features):
    model.zero_grad()
    shared = SharedImageFeatures.encode(model, prompts).trainable() if share_features else None
    parts = []
    for rows in chunks:
        unique = sorted({r // G for r in rows})
        logps = shared_prefix_logprobs(
            model,
            [prompts[u] for u in unique],
            [unique.index(r // G) for r in rows],
            ids[rows],
            mask[rows],
            pad,
            image_features=shared.for_rows(unique) if shared else None,
        )
        (logps * weights[rows] * mask[rows]).sum().backward()
        parts.append(logps.detach())
    if shared:
        shared.backward()
    return torch.cat(parts), _grads(model)


@pytest.mark.parametrize("share_features", [False, True], ids=["prefix", "prefix+features"])
@pytest.mark.parametrize("family", family_names())
def test_shared_prefix_matches_repeated_prompts(family, share_features, tiny_path, samples):
    model, processor, prompts, ids, mask, weights = _batch(family, tiny_path, samples)
    pad = processor.tokenizer.pad_token_id
    chunks = [[0, 1, 2, 3], [4, 5, 6], [7, 8]]
    naive_logps, naive_grads = _naive(model, pad, prompts, ids, mask, weights, chunks)
    got_logps, got_grads = _prefix_shared(
        model, pad, prompts, ids, mask, weights, chunks, share_features
    )
    m = mask.bool()
    assert (naive_logps[m] - got_logps[m]).abs().max() <= 1e-5
    assert naive_grads.keys() == got_grads.keys()
    assert_gradients_close(naive_grads, got_grads)


def assert_gradients_close(expected: dict, got: dict) -> None:
    """Each parameter's gradient within 1e-4 relative. The scale is floored at 1e-4 of the
    largest gradient (so differences below 1e-8 of it pass): a gradient that is zero in exact arithmetic (a key bias under softmax,
    which ignores a shift shared by all keys: SigLIP's ``k_proj.bias``) is float noise on
    both paths, and noise relative to noise says nothing."""
    floor = 1e-4 * max(float(g.norm()) for g in expected.values())
    for name, grad in expected.items():
        rel = (grad - got[name]).norm() / max(float(grad.norm()), floor, 1e-12)
        assert rel <= 1e-4, f"{name}: relative gradient difference {rel:.2e}"
