"""Chunked scoring (``policy.scoring_head``) must give the plain path's log-probs and gradients,
must never keep vocabulary-sized logits for backward, and must always give the model its LM
head back.

Everything runs in float64 so that the comparisons can be tight (``VALUE_TOL``): the chunked
and plain paths do the same arithmetic per token (one row of the head's matmul, one logsumexp
over the same V values), so they differ only by BLAS blocking for differently shaped matrices
and, for the shared prefix, by attending through a KV cache instead of the full sequence:
rounding of order 1e-16 per operation over a handful of layers. A float32 downcast (~1e-7) or a
wrong chunk, row or position (~1e-1) is orders of magnitude above the bound.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import family_names, load_model
from vlm_r1.policy import scoring_head as scoring_head_module
from vlm_r1.policy.logprobs import (
    TokenScores,
    completion_batch,
    completion_logprobs,
    shared_prefix_logprobs,
    token_logprobs,
)
from vlm_r1.policy.prompts import prepare_prompt
from vlm_r1.policy.scoring_head import ScoringHead, scoring_head

G = 3  # completions per prompt
T = 7  # completion length
#: 9 rows: the full path scores 63 tokens (12 chunks of 5 and a ragged 3), the prefix pass 9
#: (5 + 4), the tail pass 54 (10 chunks of 5 and a ragged 4).
CHUNK = 5
TEMPERATURE = 0.7
VALUE_TOL = 1e-12  # float64; see the module docstring
GRAD_TOL = 1e-12  # relative (per-parameter norm), float64


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("chunked")
    path = write_shapes(out, 3, 0, seed=5, image_size="97..211", tasks=["rec"])["rec_train"]
    return list(read_samples(str(path)))


class Batch:
    """A float64 tiny model, G random completions per prompt, and loss weights."""

    def __init__(self, family, tiny_path, samples, model_fn=None):
        torch.manual_seed(0)
        adapter, model, processor = load_model(tiny_path(family))
        if model_fn is not None:
            model = model_fn(model)
        self.model = model.double().eval()  # eval: no dropout, both paths see one function
        self.pad = processor.tokenizer.pad_token_id
        self.prompts = [prepare_prompt(adapter, processor, s) for s in samples]
        n = len(self.prompts) * G
        self.row_prompt = [r // G for r in range(n)]
        self.rows = [self.prompts[p] for p in self.row_prompt]
        forbidden = set(adapter.forbidden_token_ids(processor.tokenizer))
        allowed = torch.tensor([i for i in range(200, 600) if i not in forbidden])
        self.ids = allowed[torch.randint(len(allowed), (n, T))]
        lengths = torch.randint(1, T + 1, (n,))
        self.mask = (torch.arange(T)[None] < lengths[:, None]).long()
        self.ids = self.ids.masked_fill(self.mask == 0, self.pad)
        self.weights = torch.randn(n, T, dtype=torch.float64) * self.mask

    def plain(self):
        """The reference: whole logits of one full forward, then ``token_logprobs``."""
        batch = completion_batch(self.rows, self.ids, self.mask, self.pad, "cpu")
        logits = self.model(**batch, logits_to_keep=T + 1, use_cache=False).logits[:, :-1]
        return token_logprobs(logits, self.ids, TEMPERATURE)

    def chunked(self):
        return completion_logprobs(
            self.model, self.rows, self.ids, self.mask, self.pad, TEMPERATURE, chunk_tokens=CHUNK
        )

    def prefix(self):
        return shared_prefix_logprobs(
            self.model,
            self.prompts,
            self.row_prompt,
            self.ids,
            self.mask,
            self.pad,
            TEMPERATURE,
            chunk_tokens=CHUNK,
        )

    def value_and_grads(self, logprobs_fn):
        self.model.zero_grad()
        logps = logprobs_fn()
        (logps * self.weights).sum().backward()
        grads = {
            n: p.grad.detach().clone()
            for n, p in self.model.named_parameters()
            if p.grad is not None
        }
        return logps.detach(), grads

    def head_weight_name(self):
        weight = self.model.get_output_embeddings().weight
        return next(n for n, p in self.model.named_parameters() if p is weight)


def _whole_logits(head, hidden, targets, temperature, chunk_tokens, with_entropy=False):
    """The plain computation inside the shared-prefix structure: one head call over every token,
    ``token_logprobs`` on the whole logits, autograd keeping them (no chunks, no recompute)."""
    return token_logprobs(head(hidden), targets, temperature)


def _assert_same_grads(expected, got, must_include):
    assert expected.keys() == got.keys()
    assert must_include in expected, f"{must_include} received no gradient"
    assert expected[must_include].norm() > 0
    for name, grad in expected.items():
        rel = (grad - got[name]).norm() / grad.norm().clamp_min(1e-300)
        assert rel <= GRAD_TOL, f"{name}: relative gradient difference {rel:.2e}"


@pytest.mark.parametrize("family", family_names())
def test_chunked_values_equal_plain(family, tiny_path, samples):
    b = Batch(family, tiny_path, samples)
    with torch.no_grad():
        plain = b.plain()
    chunked, prefix = b.chunked(), b.prefix()  # with autograd recording: the checkpointed path
    assert chunked.dtype == prefix.dtype == torch.float64  # no float32 round trip
    assert chunked.shape == prefix.shape == (len(b.rows), T)
    assert (chunked - plain).abs().max() <= VALUE_TOL
    m = b.mask.bool()  # padding positions continue a cached prefix differently: compare real tokens
    assert (prefix - plain)[m].abs().max() <= VALUE_TOL
    with torch.no_grad():  # the no-recompute branch
        assert (b.chunked() - plain).abs().max() <= VALUE_TOL
        assert (b.prefix() - plain)[m].abs().max() <= VALUE_TOL


@pytest.mark.parametrize("family", family_names())
def test_chunked_gradients_equal_plain(family, tiny_path, samples, monkeypatch):
    b = Batch(family, tiny_path, samples)
    head = b.head_weight_name()
    _, plain_grads = b.value_and_grads(b.plain)
    _, chunked_grads = b.value_and_grads(b.chunked)
    _assert_same_grads(plain_grads, chunked_grads, head)
    _, prefix_grads = b.value_and_grads(b.prefix)
    # The shared prefix's own reference: the same prefix/tail forwards, scored in one piece.
    # (Against the full forward above its gradients differ by ~1e-8 in float64, because Qwen's
    # vision rotary embedding runs in float32 and the prefix sums G rows' gradients first.)
    monkeypatch.setattr(scoring_head_module, "chunked_scores", _whole_logits)
    _, whole_prefix_grads = b.value_and_grads(b.prefix)
    _assert_same_grads(whole_prefix_grads, prefix_grads, head)


def _tie(model):
    """The tiny checkpoints keep the head apart from the input embedding; large Qwen ones
    (e.g. Qwen2.5-VL-3B) tie them: one parameter read by the embedding and every chunk."""
    model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return model


def test_tied_embeddings_gradients_equal_plain(tiny_path, samples):
    b = Batch("qwen2_5_vl", tiny_path, samples, model_fn=_tie)
    assert b.model.get_output_embeddings().weight is b.model.get_input_embeddings().weight
    _, plain_grads = b.value_and_grads(b.plain)
    _, chunked_grads = b.value_and_grads(b.chunked)
    _assert_same_grads(plain_grads, chunked_grads, b.head_weight_name())


@contextmanager
def _saved_activations(model):
    """Shapes of the tensors autograd saves for backward in the block, parameters excepted
    (weights are the model, not activation memory)."""
    params = {p.data_ptr() for p in model.parameters()}
    shapes = []

    def pack(tensor):
        if tensor.data_ptr() not in params:
            shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield shapes


def _vocabulary_sized(shapes, vocab):
    """The saved shapes with a vocabulary dimension: with the parameters excepted, only logits
    (or things derived from them, e.g. their float32 copy) are vocabulary-wide."""
    return [s for s in shapes if vocab in s]


def _too_much_vocabulary(shapes, n, vocab):
    """Saved vocabulary-wide elements, summed, reach half of ``[N, T, V]``: the whole logits, or
    all the chunks' logits kept without recompute.

    Sound at tiny sizes thanks to the vocabulary dimension: the prompt's activations (``[N, L,
    H]`` with L ~ 120 image and text tokens, the pixels) exceed ``N*T*V/2`` elements here but
    are never vocabulary-wide.
    """
    return sum(math.prod(s) for s in _vocabulary_sized(shapes, vocab)) >= n * T * vocab / 2


@pytest.mark.parametrize("family", family_names())
def test_no_vocabulary_sized_tensor_saved_for_backward(family, tiny_path, samples):
    b = Batch(family, tiny_path, samples)
    vocab = b.model.get_output_embeddings().weight.shape[0]
    n = len(b.rows)
    for logprobs_fn in (b.chunked, b.prefix):
        with _saved_activations(b.model) as shapes:
            logprobs_fn()
        assert shapes, "the hook saw nothing: the check would be vacuous"
        assert not _too_much_vocabulary(shapes, n, vocab), _vocabulary_sized(shapes, vocab)
    # The detector is not vacuous: the plain path keeps [N, T, V] float64 for logsumexp.
    with _saved_activations(b.model) as shapes:
        b.plain()
    assert _too_much_vocabulary(shapes, n, vocab)
    assert (n, T, vocab) in _vocabulary_sized(shapes, vocab)


@pytest.mark.parametrize("family", family_names())
def test_head_restored_after_call_and_exception(family, tiny_path, samples):
    b = Batch(family, tiny_path, samples)
    original = b.model.get_output_embeddings()
    b.chunked()
    b.prefix()
    assert b.model.get_output_embeddings() is original
    with pytest.raises(ValueError, match="chunk_tokens"):  # raised inside the model's forward
        completion_logprobs(b.model, b.rows, b.ids, b.mask, b.pad, chunk_tokens=0)
    assert b.model.get_output_embeddings() is original
    # A forward nobody configured fails loudly, and the head still comes back.
    with pytest.raises(RuntimeError, match="set_targets"), scoring_head(b.model) as scorer:
        assert b.model.get_output_embeddings() is scorer
        assert isinstance(scorer, ScoringHead) and scorer.head is original
        b.model(**completion_batch(b.rows, b.ids, b.mask, b.pad, "cpu"))
    assert b.model.get_output_embeddings() is original
    assert not any(isinstance(m, ScoringHead) for m in b.model.modules())


class _Wrapper(nn.Module):
    """Holds the model as ``.module`` and forwards to it, as DDP and DeepSpeed's engine do."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )


def test_wrapped_models_score_through_their_head(tiny_path, samples):
    """A ``.module`` wrapper (DDP, DeepSpeed) and PEFT's wrappers: the head is found and put
    back; with LoRA the head is frozen and only the adapters get (the same) gradients."""
    b = Batch("qwen2_5_vl", tiny_path, samples, model_fn=_lora)
    inner = b.model.get_output_embeddings()
    assert not inner.weight.requires_grad
    plain_logps, plain_grads = b.value_and_grads(b.plain)
    logps, grads = b.value_and_grads(b.chunked)
    assert (logps - plain_logps).abs().max() <= VALUE_TOL
    lora = next(n for n in plain_grads if "lora_A" in n)
    assert plain_grads.keys() == grads.keys()
    _assert_same_grads(plain_grads, grads, lora)
    assert b.model.get_output_embeddings() is inner
    wrapped = _Wrapper(b.model)
    with torch.no_grad():
        got = completion_logprobs(
            wrapped, b.rows, b.ids, b.mask, b.pad, TEMPERATURE, chunk_tokens=CHUNK
        )
    assert (got - plain_logps).abs().max() <= VALUE_TOL
    assert b.model.get_output_embeddings() is inner


def _reference_entropy(b):
    """Full-softmax entropy of the tempered distribution at every completion position, from
    whole logits: ``-sum_v p_v log p_v`` written out (no ``entr``, no chunks)."""
    batch = completion_batch(b.rows, b.ids, b.mask, b.pad, "cpu")
    with torch.no_grad():
        logits = b.model(**batch, logits_to_keep=T + 1, use_cache=False).logits[:, :-1]
        logp = torch.log_softmax(logits.double() / TEMPERATURE, dim=-1)
        return -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("family", family_names())
def test_entropy_equals_the_full_softmax_reference_on_both_paths(family, tiny_path, samples):
    b = Batch(family, tiny_path, samples)
    expected = _reference_entropy(b)
    plain_logps = b.plain().detach()
    assert expected.min() > 0.1  # a real distribution, not a one-hot (the check would be empty)
    for path in ("chunked", "prefix"):
        kwargs = dict(chunk_tokens=CHUNK, with_entropy=True)
        if path == "chunked":
            scores = completion_logprobs(
                b.model, b.rows, b.ids, b.mask, b.pad, TEMPERATURE, **kwargs
            )
        else:
            scores = shared_prefix_logprobs(
                b.model, b.prompts, b.row_prompt, b.ids, b.mask, b.pad, TEMPERATURE, **kwargs
            )
        assert isinstance(scores, TokenScores)
        assert not scores.entropy.requires_grad and scores.logprobs.requires_grad
        # Padding positions continue a cached prefix differently: compare the real tokens.
        m = b.mask.bool() if path == "prefix" else torch.ones_like(b.mask, dtype=torch.bool)
        assert (scores.entropy - expected)[m].abs().max() <= VALUE_TOL, path
        assert (scores.logprobs.detach() - plain_logps)[m].abs().max() <= VALUE_TOL, path


def test_asking_for_entropy_leaves_the_gradients_unchanged(tiny_path, samples):
    b = Batch("qwen2_5_vl", tiny_path, samples)
    _, without = b.value_and_grads(b.prefix)

    def with_entropy():
        return shared_prefix_logprobs(
            b.model,
            b.prompts,
            b.row_prompt,
            b.ids,
            b.mask,
            b.pad,
            TEMPERATURE,
            chunk_tokens=CHUNK,
            with_entropy=True,
        ).logprobs

    _, got = b.value_and_grads(with_entropy)
    _assert_same_grads(without, got, must_include=b.head_weight_name())
