#!/usr/bin/env bash
# README command (b): install vlm-r1 with its dev extras into .venv and run the whole test suite
# (slow end-to-end tests included), listing the 25 slowest. pytest's exit code 5 ("no tests
# collected") is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/python -m ruff check src tests benchmarks scripts examples
set +e
.venv/bin/python -m pytest --durations=25 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
