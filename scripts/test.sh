#!/usr/bin/env bash
# Set-up + the whole test suite on the tested lock (see scripts/setup_env.sh for what set-up does).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
# Lint first: a style finding fails the suite like a test does (settings in pyproject.toml [tool.ruff]).
ruff check .
ruff format --check .
# Idle OpenMP threads sleep instead of spinning: the two workers share the cores (measured: tests/conftest.py).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# --durations: the slowest tests' times land in every CI log (a slow-down shows before it costs the budget).
python -m pytest -q -n 2 --dist loadfile --durations=25 "$@"
