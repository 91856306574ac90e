"""scripts/posttrain_probe.py takes its learning rates in pairs, and refuses unpaired ones
before any training starts."""

import sys

import pytest
from scripts_import import load_script


def test_unpaired_learning_rates_are_refused_before_training(monkeypatch, capsys, tmp_path):
    probe = load_script("posttrain_probe")

    def no_demo(*args, **kwargs):
        raise AssertionError("the demo ran")

    monkeypatch.setattr(probe.demo, "run_demo", no_demo)
    argv = ["posttrain_probe", str(tmp_path), "--sft-lr", "5e-4", "1e-4", "--grpo-lr", "1e-4"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        probe.main()
    assert exit_info.value.code == 2
    assert "in pairs" in capsys.readouterr().err
