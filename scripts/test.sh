#!/usr/bin/env bash
# Set-up + the whole test suite (see scripts/setup_env.sh for what set-up does).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
# Lint first: a style finding fails the suite like a test does (settings in pyproject.toml [tool.ruff]).
ruff check .
ruff format --check .
python -m pytest -q -n 2 --dist loadfile "$@"
