# Sourced by scripts/test.sh and scripts/demo.sh: the one set-up both README commands share.
# Installs into the active virtual environment, or creates and reuses the project's own `.venv`
# (a fresh Linux box's system Python may refuse `pip install`, PEP 668). torch is pinned so pip takes
# the local CPU wheel (an unpinned torch would pull several GB of CUDA packages); torchaudio is never
# installed here.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[dev]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
