#!/usr/bin/env bash
# The version matrix's second cell: the upstream-contract tests (tests/contract_tests.txt) in `.venv-oldest`, built
# by the same set-up from requirements/oldest.txt: the lock with the OLDEST supported transformers, peft and
# lightning (pyproject.toml's lower bounds). The first cell is scripts/test.sh: the whole suite on the lock.
# .ci/run runs both. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export AUDIO_ADAPTER_VENV=.venv-oldest AUDIO_ADAPTER_LOCK=requirements/oldest.txt
source scripts/setup_env.sh
mapfile -t contract_tests < <(grep -Ev '^[[:space:]]*(#|$)' tests/contract_tests.txt)
python - <<'PY'
from importlib.metadata import version
print("oldest cell:", ", ".join(f"{n} {version(n)}" for n in ("torch", "transformers", "peft", "lightning")))
PY
python -m pytest -q -n 2 --dist loadfile --durations=10 "${contract_tests[@]}" "$@"
