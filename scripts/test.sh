#!/usr/bin/env bash
# Lint and the whole test suite, CPU only, offline. Extra arguments go to pytest (e.g. -k selection).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check spc_train tests scripts
.venv/bin/ruff format --check spc_train tests scripts
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest "$@"
