"""Seeded sampling per prompt group inside one batched ``generate`` call.

A prompt's G completions must not depend on which other prompts share its ``generate`` call
(nor on how prompts are split across processes), so each group draws from its own
``torch.Generator`` seeded with that group's seed. transformers' own sampling draws every row
from the one global generator, which ties a group's draws to its neighbours. So the batched
call decodes greedily (``do_sample=False``) and :class:`GroupSampler`, the last logits
processor, does the sampling: it shapes each group's scores with the warpers transformers
would build for ``do_sample=True`` (same classes, same order, same conditions), draws with
``torch.multinomial`` on the group's own generator, and returns scores that are 0 at the drawn
token and -inf elsewhere, which the greedy step then picks.

Every step's work for a group runs on that group's ``[G, V]`` slice, the same shape the
per-group call (``torch.manual_seed(seed)`` then HF sampling) works on, and a generator seeded
with ``s`` draws what the global generator seeded with ``s`` draws; so, given equal logits,
a group's tokens equal the per-group call's token for token. Rows that have finished keep
being drawn for (transformers then writes pad), exactly as in the per-group call, and their
draws only advance their own group's generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def sampling_warpers(temperature: float, top_k: int | None, top_p: float) -> LogitsProcessorList:
    """The warpers transformers' ``_get_logits_processor`` builds for ``do_sample=True`` from
    these values (temperature, then top-k, then top-p, each only when it changes anything,
    ``min_tokens_to_keep=1`` as without beams). The other warpers (min-p, top-h, typical,
    epsilon, eta) are pinned off by the rollout, so they are absent on both paths."""
    warpers = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


class GroupSampler(LogitsProcessor):
    """Draws each group's next tokens from its own seeded generator (see the module docstring).

    Rows are ``len(seeds)`` consecutive groups of ``group_size``. Single use: the generators
    advance with every step, so one instance serves one ``generate`` call.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        group_size: int,
        temperature: float,
        top_k: int | None,
        top_p: float,
    ):
        self.seeds = [int(s) for s in seeds]
        self.group_size = group_size
        self.warpers = sampling_warpers(temperature, top_k, top_p)
        self._generators: list[torch.Generator] | None = None

    def _generators_on(self, device: torch.device) -> list[torch.Generator]:
        # Created at the first step, on the device the scores live on: multinomial needs a
        # generator of that device, and a CUDA generator seeded with s draws what the default
        # CUDA generator draws after torch.manual_seed(s).
        if self._generators is None:
            self._generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        return self._generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        g = self.group_size
        if scores.shape[0] != g * len(self.seeds):
            raise ValueError(
                f"GroupSampler expected {len(self.seeds)} groups of {g} rows, got {scores.shape[0]}"
            )
        out = torch.full_like(scores, float("-inf"))
        for i, generator in enumerate(self._generators_on(scores.device)):
            rows = slice(i * g, (i + 1) * g)
            # Per group, not on the whole batch: the warpers, softmax and multinomial then see
            # the very [G, V] tensor the per-group call's sampling step sees.
            warped = self.warpers(input_ids[rows], scores[rows])
            probs = torch.nn.functional.softmax(warped, dim=-1)
            tokens = torch.multinomial(probs, num_samples=1, generator=generator)
            out[rows] = out[rows].scatter(1, tokens, 0.0)
        return out
