"""Is model B better than model A on the same eval samples? A paired, exact answer.

Acc@0.5 differences on a 100-sample split are noisy, so a claim like "SFT improves on the start
model" is only printed with its evidence: McNemar's exact test on the discordant pairs (samples
one model gets right and the other wrong). Under "no difference" each discordant pair is a fair
coin, so the one-sided p-value is a binomial tail (McNemar 1947; the exact form, not the
chi-squared approximation, because the counts here are small).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

#: Significance level for the demo's statements.
ALPHA = 0.05


def binomial_upper_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2)."""
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}, {trials}")
    return math.fsum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


@dataclass(frozen=True)
class PairedComparison:
    """B against A on the same samples (hits = IoU >= threshold)."""

    n: int
    accuracy_a: float
    accuracy_b: float
    b_only: int  # samples B gets right and A gets wrong
    a_only: int
    p_value: float  # one-sided: the chance of >= b_only wins out of the discordant pairs

    @property
    def b_is_better(self) -> bool:
        return self.p_value < ALPHA and self.b_only > self.a_only

    def as_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "b_is_better": self.b_is_better}


def compare_hits(hits_a: list[bool], hits_b: list[bool]) -> PairedComparison:
    """McNemar's exact one-sided test that B's hit rate exceeds A's on paired samples."""
    if len(hits_a) != len(hits_b):
        raise ValueError(f"paired samples differ in number: {len(hits_a)} vs {len(hits_b)}")
    n = len(hits_a)
    b_only = sum(b and not a for a, b in zip(hits_a, hits_b, strict=True))
    a_only = sum(a and not b for a, b in zip(hits_a, hits_b, strict=True))
    return PairedComparison(
        n=n,
        accuracy_a=sum(hits_a) / n if n else float("nan"),
        accuracy_b=sum(hits_b) / n if n else float("nan"),
        b_only=b_only,
        a_only=a_only,
        p_value=binomial_upper_tail(b_only, b_only + a_only),
    )


def read_hits(predictions: str | Path, threshold: float = 0.5) -> dict[str, bool]:
    """Per-sample hits from an eval ``predictions.jsonl`` (REC rows carry their IoU)."""
    hits = {}
    with open(predictions, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("iou") is not None:
                hits[row["id"]] = row["iou"] >= threshold
    return hits


def compare_predictions(
    predictions_a: str | Path, predictions_b: str | Path, threshold: float = 0.5
) -> PairedComparison:
    """Compare two eval runs over the samples both scored (matched by sample id)."""
    a, b = read_hits(predictions_a, threshold), read_hits(predictions_b, threshold)
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise ValueError(f"{predictions_a} and {predictions_b} share no scored sample ids")
    return compare_hits([a[i] for i in shared], [b[i] for i in shared])
