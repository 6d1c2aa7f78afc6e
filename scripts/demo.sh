#!/usr/bin/env bash
# Set-up + the main job (the embedded CPU demo).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[dev]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m scripts.demo "$@"
