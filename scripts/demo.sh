#!/usr/bin/env bash
# Set-up + the main job: pretrained Whisper tiny.en + SmolLM2-135M-Instruct learn to hear, on the CPU (see
# scripts/setup_env.sh for what set-up does; --tiny, --tiny --speech, --quick: see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -m scripts.demo "$@"
