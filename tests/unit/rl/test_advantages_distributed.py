"""``scale_rewards: batch`` over 2 processes (gloo, torchrun) equals the 1-process result.

Each rank takes its half of one fixed global reward vector and calls ``step_advantages`` with
a real ``accelerate.Accelerator`` (the same call the trainer's ``collect`` makes), so the
all-gather is exercised, not mocked.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from vlm_r1.rl.advantages import ADVANTAGES

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import torch
    from accelerate import Accelerator

    from vlm_r1.rl.advantages import ADVANTAGES, step_advantages

    acc = Accelerator(cpu=True)
    everything = torch.tensor(json.loads(sys.argv[1]), dtype=torch.float32)
    group_size, out = int(sys.argv[2]), Path(sys.argv[3])
    mine = everything.chunk(acc.num_processes)[acc.process_index]
    advantages = {
        name: step_advantages(fn, mine, group_size, acc).tolist()
        for name, fn in sorted(ADVANTAGES.items())
    }
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(advantages))
    # Leave the process group before exit, as the trainers do: a gloo group still alive at
    # interpreter exit can abort the process ("terminate called without an active exception").
    acc.end_training()
    """
)

# 4 groups of G = 3. The halves have very different spreads (rank 0: 0/1 rewards, rank 1:
# small ones), so a per-process std would give a different answer.
REWARDS = [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.1, 0.2, 0.1, 0.0, 0.05, 0.1]
G = 3


def run_two_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        json.dumps(REWARDS),
        str(G),
        str(tmp_path),
    ]
    # A hang (a rank stuck in the collective) fails the test instead of blocking the suite.
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    halves = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    return {name: halves[0][name] + halves[1][name] for name in halves[0]}


@pytest.mark.slow  # two torchrun processes: ~15 s on a small CPU
def test_two_processes_equal_one(tmp_path):
    got = run_two_processes(tmp_path)
    rewards = torch.tensor(REWARDS, dtype=torch.float32)
    assert sorted(got) == sorted(ADVANTAGES)
    for name, fn in ADVANTAGES.items():
        expected = fn(rewards, G).tolist()
        assert got[name] == pytest.approx(expected, rel=1e-6, abs=1e-7), name
    # The per-process std (each rank alone) is a different answer: the gather matters.
    per_process = torch.cat([ADVANTAGES["batch"](half, G) for half in rewards.chunk(2)])
    assert per_process.tolist() != pytest.approx(ADVANTAGES["batch"](rewards, G).tolist(), rel=1e-3)
