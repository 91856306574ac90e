"""The ``vlm-r1`` command line: thin wrappers that parse arguments and call one function each."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="R1-style reinforcement learning (GRPO) for vision-language models.",
)


@app.callback()
def _root() -> None:
    """R1-style reinforcement learning (GRPO) for vision-language models."""


class UserError(Exception):
    """An error caused by the user's input: printed as one line, no traceback."""


@app.command("tiny-model")
def tiny_model(
    family: str = typer.Argument(
        ..., help="Model family, e.g. qwen2_5_vl, qwen2_vl, qwen3_vl, internvl."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the checkpoint to."),
    size: str = typer.Option("test", "--size", help="test (~0.25M params) or demo (a few M)."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and tokenizer corpus."),
) -> None:
    """Build a tiny real checkpoint (random weights, local tokenizer, real processor)."""
    from vlm_r1.models.tiny import build_tiny

    path = build_tiny(family, out, size, seed)
    typer.echo(f"wrote {family} ({size}, seed {seed}) to {path}")


def main() -> None:
    """Console entry point: known user errors become one red line and exit code 2."""
    from vlm_r1.models.adapter import ModelLoadError

    try:
        app()
    except (ModelLoadError, UserError, ValueError, FileNotFoundError) as err:
        _fail_quietly(str(err))


def _fail_quietly(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
