#!/usr/bin/env bash
# Set-up + the whole test suite. torch is pinned so pip takes the local CPU wheel (an unpinned torch
# would pull several GB of CUDA packages); torchaudio is never installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[dev]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -q -n 2 --dist loadfile "$@"
