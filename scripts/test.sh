#!/usr/bin/env bash
# Lint and the whole test suite, CPU only, offline. Extra arguments go to pytest (e.g. -k selection).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check spc_train tests scripts
.venv/bin/ruff format --check spc_train tests scripts
# A temporary folder of this run's own: pytest keeps only the 3 newest basetemps under $TMPDIR/pytest-of-$USER, so
# suites running side by side (two clones, a busy CI machine) would otherwise delete each other's tiny models.
TMPDIR="$(mktemp -d -t spc-train-tests-XXXXXX)"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest "$@"
