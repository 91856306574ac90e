"""The `vlm-r1` command line with test instrumentation installed around the Engine.

    python -m instrumented_cli [--kill-after-checkpoint N] [--digest-parameters] train ...

* ``--kill-after-checkpoint N``: SIGKILL this process right after checkpoint N is committed (a
  crash at the worst moment, for the exact-resume tests).
* ``--digest-parameters``: when training ends, every process that holds the full weights
  writes ``param_digest_rank<R>.txt`` (a hash of them) into the run folder, so a test can
  check that data-parallel ranks hold identical parameters and compare runs.
* ``--short-completions-on-rank1 N``: process 1 generates at most N new tokens per completion
  (the others the configured length), so processes decode different lengths in the same step:
  under a sharding engine, generation must not wait on the other process.
* ``--nan-loss-at-step N``: at GRPO step N, process 0's loss is multiplied by NaN, so the
  step's (reduced) gradient is non-finite: every engine must skip that update and count it.

It wraps ``Engine.save`` / ``Engine.cleanup`` from the outside: the library itself has no test
hooks. Works under ``torchrun ... -m instrumented_cli`` (tests/support on PYTHONPATH).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys

import torch


def parameter_digest(weights: dict[str, torch.Tensor]) -> str:
    """A hash of every weight's values (equal digests = identical weights)."""
    h = hashlib.sha256()
    for name, value in sorted(weights.items()):
        h.update(name.encode())
        h.update(value.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def shorten_completions_on_rank1(max_new_tokens: int) -> None:
    import dataclasses

    from vlm_r1.rl.rollout import HFRollout

    generate = HFRollout.generate

    def shortened(self, model, prompts, seeds, params):
        if os.environ.get("RANK") == "1":
            params = dataclasses.replace(params, max_new_tokens=max_new_tokens)
        return generate(self, model, prompts, seeds, params)

    HFRollout.generate = shortened


def nan_loss_at_step(step: int) -> None:
    from vlm_r1.rl.trainer import GRPOTrainer

    setup = GRPOTrainer.setup

    def poisoned_setup(self):
        setup(self)
        loss_fn = self.loss_fn

        def poisoned(inputs, settings):
            loss, metrics = loss_fn(inputs, settings)
            if self.step + 1 == step and os.environ.get("RANK", "0") == "0":
                loss = loss * float("nan")
            return loss, metrics

        self.loss_fn = poisoned

    GRPOTrainer.setup = poisoned_setup


def install(kill_after_checkpoint: int | None, digest_parameters: bool) -> None:
    from vlm_r1.engine import Engine

    save, cleanup = Engine.save, Engine.cleanup

    def save_then_maybe_die(self, step, state, final=False):
        path = save(self, step, state, final)
        if step == kill_after_checkpoint:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    def digest_then_cleanup(self):
        if digest_parameters:
            # Sharded: the gathered weights (a collective; only the main process gets them).
            # Replicated: each process's own copy, so ranks can be compared.
            weights = (
                self.parallel.full_state_dict(self.model)
                if self.parallel.shards_parameters
                else self.unwrapped().state_dict()
            )
            if weights:
                rank = self.accelerator.process_index
                digest = parameter_digest(weights)
                (self.output_dir / f"param_digest_rank{rank}.txt").write_text(digest)
        cleanup(self)

    Engine.save = save_then_maybe_die
    Engine.cleanup = digest_then_cleanup


def main() -> None:
    args = sys.argv[1:]
    kill = None
    digest = False
    flags = (
        "--kill-after-checkpoint",
        "--digest-parameters",
        "--short-completions-on-rank1",
        "--nan-loss-at-step",
    )
    while args and args[0] in flags:
        flag = args.pop(0)
        if flag == "--kill-after-checkpoint":
            kill = int(args.pop(0))
        elif flag == "--short-completions-on-rank1":
            shorten_completions_on_rank1(int(args.pop(0)))
        elif flag == "--nan-loss-at-step":
            nan_loss_at_step(int(args.pop(0)))
        else:
            digest = True
    install(kill, digest)
    sys.argv = [sys.argv[0], *args]
    from vlm_r1.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
