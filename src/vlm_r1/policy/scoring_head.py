"""An LM head that returns log-probs of target tokens, chunk by chunk, instead of logits.

Why chunks: at a real vocabulary (Qwen's 151,936) and T = 1,024 completion tokens, N = 8 rows,
the logits ``[N, T, V]`` and their float32 copy for ``log_softmax`` are ~5 GB per forward, and
autograd would keep them for backward. Here the head and the log-softmax run on at most
``chunk_tokens`` (row, position) tokens at a time, in float32 after dividing by the temperature,
and only the picked log-prob per token is kept. In backward each chunk's logits are recomputed
from its hidden states (the idea of Liger-Kernel's chunked fused linear cross-entropy, done here
with plain autograd), so no more than one chunk's ``[chunk_tokens, V]`` ever exists.

Why the head is swapped rather than called after the backbone: the distributed engines only
prepare the head's parameters inside the model's own forward (DDP arms its gradient all-reduce
in ``DDP.forward``; FSDP2 unshards the root's parameters, the LM head and tied embeddings among
them, around the root's forward and in its backward hooks; DeepSpeed ZeRO-3 gathers a module's
parameters in that module's hooks; accelerate's autocast wraps ``model.forward``). So
:func:`scoring_head` puts a :class:`ScoringHead` where the model keeps its output embedding for
the duration of one call; the model's forward runs unchanged and returns the log-probs in
``.logits``. The original head stays a child and is called through ``__call__`` per chunk, so
its own hooks (ZeRO-3) fire in the forward and again in each recompute.

Why ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` per chunk and not a custom
``autograd.Function``: a Function that recomputes logits in its backward would have to take the
head's weight as an explicit input (bypassing the module call, so ZeRO-3 never gathers it) and
return its gradient by hand. Non-reentrant checkpointing records the ordinary graph in the
forward (edges from each chunk to the head's parameters, so DDP's unused-parameter search and
per-parameter hooks see them, and one leaf used by many chunks and by the tied input embedding
accumulates once), drops the activations, and reruns the module call in backward under the
same autocast state. Reentrant checkpointing would hide the parameters from the forward graph.

Entropy. With ``with_entropy`` the head also gives each scored token's entropy
``H = -sum_v p_v log p_v`` of the same tempered distribution, from the same chunk of logits
(no second forward; no gradient: it is a diagnostic and a token selector, as in TRL). It costs
a few elementwise passes over the chunk's logits, against the ``[C, H] x [H, V]`` projection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

#: Default most (row, position) tokens whose logits exist at once: [1024, 151936] float32 is
#: ~0.6 GB, against ~5 GB for the whole [N, T, V] at N = 8, T = 1,024.
DEFAULT_CHUNK_TOKENS = 1024


def scoring_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: bf16/fp16 logits are upcast, float64 (tests) is kept exact."""
    return torch.promote_types(dtype, torch.float32)


def entropy_from_logits(scaled: torch.Tensor) -> torch.Tensor:
    """``-sum_v p_v log p_v`` over the last axis of (tempered) logits, without a gradient.

    One chunk-sized temporary (the probabilities, overwritten in place by ``entr``), and
    ``torch.special.entr`` takes ``0 log 0 = 0`` (``-inf`` logits, underflow) instead of nan."""
    with torch.no_grad():
        p = torch.softmax(scaled, dim=-1)
        return torch.special.entr(p, out=p).sum(-1)


def score_tokens(
    head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax(head(hidden) / temperature)`` at ``targets``: ``[C, H] x [C] -> [C]``;
    with ``with_entropy`` also the entropy of each token's distribution, ``[C]``."""
    logits = head(hidden)
    scaled = logits.to(scoring_dtype(logits.dtype)) / temperature
    picked = torch.gather(scaled, -1, targets.unsqueeze(-1)).squeeze(-1)
    logps = picked - torch.logsumexp(scaled, dim=-1)
    return (logps, entropy_from_logits(scaled)) if with_entropy else logps


def chunked_scores(
    head: nn.Module,
    hidden: torch.Tensor,  # [C, H]
    targets: torch.Tensor,  # [C]
    temperature: float,
    chunk_tokens: int,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`score_tokens` over ``chunk_tokens`` rows at a time; each chunk recomputed in
    backward when autograd records (see the module docstring for why checkpointing); with
    ``with_entropy`` a pair ``(log-probs, entropies)``."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    parts = []
    # One split (not slicing per chunk): its backward joins the chunks' gradients in one cat.
    for h, t in zip(hidden.split(chunk_tokens), targets.split(chunk_tokens), strict=True):
        args = (head, h, t, temperature, with_entropy)
        if torch.is_grad_enabled():
            parts.append(checkpoint(score_tokens, *args, use_reentrant=False))
        else:
            parts.append(score_tokens(*args))
    if not parts:  # no tokens to score (e.g. the tail pass of one-token completions)
        empty = hidden.new_zeros(0, dtype=scoring_dtype(hidden.dtype))
        return (empty, empty.clone()) if with_entropy else empty
    if with_entropy:
        return torch.cat([lp for lp, _ in parts]), torch.cat([e for _, e in parts])
    return torch.cat(parts)


class ScoringHead(nn.Module):
    """Stands in for the output embedding: hidden ``[B, L, H]`` -> log-probs ``[M, K]``.

    Before each forward, :meth:`set_targets` gives the targets ``[M, K]`` and optionally
    ``rows`` (``[M]`` indices into the batch, e.g. which cached prefix each completion
    continues); position ``j < K`` of row ``m`` of ``hidden[rows]`` is scored against
    ``targets[m, j]``. Targets are used once, so a call nobody configured fails loudly instead
    of scoring stale tokens. With ``with_entropy`` each call's token entropies ``[M, K]`` are
    appended to :attr:`entropies` (the call still returns the log-probs, which the model's
    forward hands back as ``.logits``).
    """

    def __init__(
        self, head: nn.Module, temperature: float, chunk_tokens: int, with_entropy: bool = False
    ) -> None:
        super().__init__()
        self.head = head  # a child, so hooks and parameter ownership stay with it
        self.temperature = temperature
        self.chunk_tokens = chunk_tokens
        self.with_entropy = with_entropy
        self.entropies: list[torch.Tensor] = []
        self._pending: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def set_targets(self, targets: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        self._pending = (targets, rows)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._pending is None:
            raise RuntimeError("ScoringHead called without targets: call set_targets() first")
        (targets, rows), self._pending = self._pending, None
        if rows is not None:
            hidden = hidden[rows]
        m, k = targets.shape
        if hidden.shape[0] != m or hidden.shape[1] < k:
            raise ValueError(
                f"hidden {tuple(hidden.shape)} cannot score targets {tuple(targets.shape)}"
            )
        flat = hidden[:, :k].reshape(m * k, hidden.shape[-1])
        scores = chunked_scores(
            self.head,
            flat,
            targets.reshape(-1),
            self.temperature,
            self.chunk_tokens,
            self.with_entropy,
        )
        if self.with_entropy:
            scores, entropy = scores
            self.entropies.append(entropy.view(m, k))
        return scores.view(m, k)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DeepSpeed (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def head_slot(model: nn.Module) -> tuple[nn.Module, str]:
    """``(parent, name)`` such that ``getattr(parent, name)`` is the model's output embedding.

    Found by identity in the module tree, so it also holds through PEFT's wrappers, whose
    ``get_output_embeddings`` forwards to the base model.
    """
    inner = unwrap(model)
    head = inner.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no output embeddings to score with")
    if isinstance(head, ScoringHead):
        raise RuntimeError("the output embedding is already a ScoringHead (nested scoring_head)")
    for parent in inner.modules():
        for name, child in parent.named_children():
            if child is head:
                return parent, name
    raise ValueError(f"the output embedding of {type(inner).__name__} is not in its module tree")


@contextmanager
def scoring_head(
    model: nn.Module,
    temperature: float = 1.0,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
) -> Iterator[ScoringHead]:
    """Swap the model's output embedding for a :class:`ScoringHead` for the ``with`` block;
    the original module object is put back on exit, exception or not."""
    parent, name = head_slot(model)
    original = getattr(parent, name)
    scorer = ScoringHead(original, temperature, chunk_tokens, with_entropy)
    setattr(parent, name, scorer)
    try:
        yield scorer
    finally:
        setattr(parent, name, original)
