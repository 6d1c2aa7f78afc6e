#!/usr/bin/env bash
# Set-up + the main job, the embedded CPU demo (see scripts/setup_env.sh for what set-up does).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -m scripts.demo "$@"
