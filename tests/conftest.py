"""Shared fixtures: tiny checkpoints are built once per machine (content-addressed cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A subprocess that dies on a signal (a C++ abort in a distributed launch) prints every thread's
# Python stack, so a rare crash in CI says where it happened.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


@pytest.fixture(scope="session")
def tiny_path():
    """``tiny_path(family, size='test', seed=0) -> Path`` of a cached tiny checkpoint."""
    from vlm_r1.models.tiny import tiny_checkpoint

    def get(family: str, size: str = "test", seed: int = 0) -> Path:
        return tiny_checkpoint(family, size, seed)

    return get
