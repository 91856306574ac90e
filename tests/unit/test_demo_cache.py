"""The demo's pretrained bases are cached per machine: reused for the same key, rebuilt for
another, and a build killed half-way is never taken for a finished one: redone, or for a
resumable build, continued."""

import pytest

from vlm_r1.demo.stages import cached_run


def _builder(calls):
    def build(staging):
        calls.append(staging)
        (staging / "stage" / "final").mkdir(parents=True)
        (staging / "stage" / "final" / "config.json").write_text("{}")
        return staging / "stage" / "final"

    return build


def test_same_key_is_reused_and_another_key_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_R1_CACHE", str(tmp_path))
    calls = []
    first = cached_run("base", ["plan", 1], _builder(calls))
    again = cached_run("base", ["plan", 1], _builder(calls))
    other = cached_run("base", ["plan", 2], _builder(calls))
    assert first == again != other and len(calls) == 2
    assert first.name == "final" and (first / "config.json").is_file()
    assert first.parents[1].parent == tmp_path / "demo" and not calls[0].exists()  # renamed


def test_a_killed_build_is_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_R1_CACHE", str(tmp_path))

    def killed(staging):
        (staging / "stage").mkdir(parents=True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_run("base", ["k"], killed)
    calls = []
    path = cached_run("base", ["k"], _builder(calls))
    assert len(calls) == 1 and (path / "config.json").is_file()
    assert not list((tmp_path / "demo").glob("*.tmp"))


def test_a_killed_resumable_build_gets_its_staging_back(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_R1_CACHE", str(tmp_path))

    def killed(staging):
        (staging / "stage").mkdir(parents=True)
        (staging / "stage" / "checkpoint").write_text("step 250")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_run("base", ["k"], killed, resumable=True)
    left = []

    def resumed(staging):
        left.append((staging / "stage" / "checkpoint").read_text())
        return _builder([])(staging)

    path = cached_run("base", ["k"], resumed, resumable=True)
    assert left == ["step 250"] and (path / "config.json").is_file()
    assert not list((tmp_path / "demo").glob("*.tmp"))
