#!/usr/bin/env bash
# Set-up + the main job, the embedded CPU demo on a tiny model (see scripts/setup_env.sh for what set-up does;
# --speech, --pretrained: see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -m scripts.demo "$@"
