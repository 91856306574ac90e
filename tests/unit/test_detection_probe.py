"""scripts/detection_probe.py refuses a bad run or a missing detection base before any data
is written or any training starts."""

import sys

import pytest
from scripts_import import load_script


@pytest.fixture
def probe(monkeypatch):
    script = load_script("detection_probe")

    def no_work(*args, **kwargs):
        raise AssertionError("the probe started working")

    for name in ("write_shapes", "grpo", "evaluate"):
        monkeypatch.setattr(script, name, no_work)
    return script


@pytest.mark.parametrize("run", ["ap", "ap@", "ap@fast", "ap@0", "ap@-1e-4", "rec_iou@1e-4"])
def test_a_bad_run_is_refused(probe, monkeypatch, capsys, tmp_path, run):
    detector = tmp_path / "detector"
    detector.mkdir()
    (detector / "config.json").write_text("{}")
    argv = ["detection_probe", str(tmp_path / "out"), run, "--detector", str(detector)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        probe.main()
    assert exit_info.value.code == 2
    assert "expected REWARD@LR" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_detector_that_is_not_a_checkpoint_is_refused(probe, monkeypatch, capsys, tmp_path):
    argv = ["detection_probe", str(tmp_path / "out"), "ap@1e-4", "--detector", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        probe.main()
    assert exit_info.value.code == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_runs_parse_into_reward_and_rate(probe):
    assert probe.run_spec("od_length@2e-5") == ("od_length", 2e-5)
