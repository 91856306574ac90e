"""Metrics averaged over processes: NaN ("undefined here") entries are left out of the mean."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from vlm_r1.engine import nan_mean_reduce


class SimulatedProcesses:
    """Stands in for accelerate: ``reduce(x, "sum")`` sums x over every simulated process."""

    def __init__(self, per_process):
        self.per_process = per_process
        self.device = torch.device("cpu")
        self.calls = 0

    def run(self):
        results = []
        for rank, values in enumerate(self.per_process):
            self.rank = rank
            results.append(nan_mean_reduce(values, self))
        return results

    def reduce(self, packed, op):
        assert op == "sum"
        self.calls += 1
        everyone = [
            torch.cat([torch.nan_to_num(v, nan=0.0), (~torch.isnan(v)).float()])
            for v in self.per_process
        ]
        assert torch.equal(packed, everyone[self.rank])  # sums of defined values, then counts
        return torch.stack(everyone).sum(0)


def test_hand_computed_case():
    nan = float("nan")
    procs = SimulatedProcesses([torch.tensor([1.0, nan, nan]), torch.tensor([3.0, 2.0, nan])])
    for result in procs.run():
        assert result[:2].tolist() == [2.0, 2.0] and math.isnan(result[2])
    assert procs.calls == 2  # one collective per process per step


@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=4, max_size=4),
        min_size=1,
        max_size=4,
    )
)
def test_matches_a_naive_nan_mean(rows):
    tensors = [torch.tensor([math.nan if v is None else v for v in r]) for r in rows]
    got = SimulatedProcesses(tensors).run()[0]
    for j in range(4):
        defined = [r[j] for r in rows if r[j] is not None]
        if defined:
            assert math.isclose(
                got[j].item(), sum(defined) / len(defined), rel_tol=1e-5, abs_tol=1e-2
            )
        else:
            assert math.isnan(got[j].item())
