#!/usr/bin/env bash
# Set-up + the main job: pretrained Whisper tiny.en + SmolLM2-135M learn to hear, on CPU (--tiny: the tiny random
# model instead; see scripts/setup_env.sh for what set-up does).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -m scripts.demo "$@"
