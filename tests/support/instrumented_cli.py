"""The `vlm-r1` command line with test instrumentation installed around the Engine.

    python -m instrumented_cli [--kill-after-checkpoint N] [--digest-parameters] train ...

* ``--kill-after-checkpoint N``: SIGKILL this process right after checkpoint N is committed (a
  crash at the worst moment, for the exact-resume tests).
* ``--digest-parameters``: when training ends, every process writes
  ``param_digest_rank<R>.txt`` (a hash of all its weights) into the run folder, so a test can
  check that data-parallel ranks hold identical parameters.

It wraps ``Engine.save`` / ``Engine.cleanup`` from the outside: the library itself has no test
hooks. Works under ``torchrun ... -m instrumented_cli`` (tests/support on PYTHONPATH).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys

import torch


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter's values (equal digests = identical weights)."""
    h = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(param.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


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
            rank = self.accelerator.process_index
            digest = parameter_digest(self.unwrapped())
            (self.output_dir / f"param_digest_rank{rank}.txt").write_text(digest)
        cleanup(self)

    Engine.save = save_then_maybe_die
    Engine.cleanup = digest_then_cleanup


def main() -> None:
    args = sys.argv[1:]
    kill = None
    digest = False
    while (
        args
        and args[0].startswith("--")
        and args[0]
        in (
            "--kill-after-checkpoint",
            "--digest-parameters",
        )
    ):
        flag = args.pop(0)
        if flag == "--kill-after-checkpoint":
            kill = int(args.pop(0))
        else:
            digest = True
    install(kill, digest)
    sys.argv = [sys.argv[0], *args]
    from vlm_r1.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
