#!/usr/bin/env bash
# The upstream canary, for people (not CI: it needs the package index and its answer changes with every release).
# In a scratch venv (.venv-canary, or $CANARY_VENV) it installs the lock, upgrades transformers, peft and lightning
# to the newest releases the index offers (their dependencies move only where the new releases require it; torch
# stays pinned to 2.13.0, the CPU wheel), runs the upstream-contract tests (tests/contract_tests.txt) and prints
# a report: versions against the lock, the tests' outcome, and each private transformers hook or signature that
# moved (scripts/upstream_report.py). Exit status 1 when something moved. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export AUDIO_ADAPTER_VENV="${CANARY_VENV:-.venv-canary}" AUDIO_ADAPTER_LOCK=requirements/lock.txt
# A reused canary venv holds last run's upgrades: the set-up sees they are not the lock and reinstalls it.
source scripts/setup_env.sh
canary_pins="$VIRTUAL_ENV/canary-constraints.txt"
printf 'torch==2.13.0\n' >"$canary_pins"
echo "canary: upgrading transformers, peft, lightning to the newest releases (torch stays 2.13.0)"
# pip may warn that audio-vlm-adapter's transformers cap is exceeded: testing past the cap is the point.
python -m pip install --quiet --disable-pip-version-check -U -c "$canary_pins" \
  transformers peft lightning pytorch-lightning
mapfile -t contract_tests < <(grep -Ev '^[[:space:]]*(#|$)' tests/contract_tests.txt)
junit="$VIRTUAL_ENV/canary-junit.xml"
rm -f "$junit"
python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider --junitxml="$junit" "${contract_tests[@]}" "$@" || true
echo
python -m scripts.upstream_report --lock requirements/lock.txt --junit "$junit"
