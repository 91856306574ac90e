"""The CLI prints the project's input errors as one line (exit 2) and keeps the traceback of
everything else: a ValueError from torch or transformers is a bug to see, not a typo."""

import signal

import pytest

from vlm_r1 import cli
from vlm_r1.config import ConfigError
from vlm_r1.errors import TrainingInterrupted


def run_main(monkeypatch, error):
    def app():
        raise error

    monkeypatch.setattr(cli, "app", app)
    cli.main()


def test_input_errors_are_one_line_with_exit_code_2(monkeypatch, capsys):
    monkeypatch.delenv("VLM_R1_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        run_main(monkeypatch, ConfigError("optim.learning_rate=nan must be a finite number"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: optim.learning_rate=nan must be a finite number"


@pytest.mark.parametrize("error", [ValueError("shape mismatch"), OSError("disk"), KeyError("x")])
def test_other_errors_keep_their_traceback(monkeypatch, error):
    monkeypatch.delenv("VLM_R1_DEBUG", raising=False)
    with pytest.raises(type(error)):
        run_main(monkeypatch, error)


def test_debug_shows_the_traceback_of_input_errors(monkeypatch):
    monkeypatch.setenv("VLM_R1_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_main(monkeypatch, ConfigError("bad"))


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_exits_128_plus_the_signal(monkeypatch, capsys, signum, code):
    with pytest.raises(SystemExit) as info:
        run_main(monkeypatch, TrainingInterrupted(signum, 7))
    assert info.value.code == code
    assert f"stopped by {signal.Signals(signum).name} at step 7" in capsys.readouterr().err


def test_debug_flag_is_a_global_option():
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["--debug", "train", "--help"])
    assert result.exit_code == 0 and "--overwrite" in result.output


def test_eval_split_and_columns_reach_the_runner(monkeypatch):
    """``vlm-r1 eval --split --columns`` for an ``hf:`` source: parsed and passed through."""
    from typer.testing import CliRunner

    from vlm_r1.eval import runner

    seen = {}

    def fake_evaluate(*args, **kwargs):
        seen.update(kwargs)
        return None  # as a non-main process would: nothing printed

    monkeypatch.setattr(runner, "evaluate_checkpoint", fake_evaluate)
    args = ["eval", "--model", "m", "--data", "hf:/d", "--split", "validation"]
    result = CliRunner().invoke(cli.app, [*args, "--columns", "{problem: question, image: img}"])
    assert result.exit_code == 0, result.output
    assert seen["split"] == "validation"
    assert seen["columns"] == {"problem": "question", "image": "img"}
    result = CliRunner().invoke(cli.app, [*args, "--columns", "[1, 2]"])
    assert isinstance(result.exception, cli.UserError) and "--columns" in str(result.exception)
