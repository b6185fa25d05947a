#!/usr/bin/env bash
# The main job on the embedded offline default: the whole Generator-Critic loop, 2 iterations, tiny local
# models (built on first use from the shipped SPC sample), CPU only. Re-running resumes and skips finished stages.
# Extra arguments are recipe overrides, e.g. ./scripts/demo.sh --loop.iterations 3
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/spc-train loop --config recipes/tiny/loop.yaml --run_dir "${RUN_DIR:-runs/demo}" "$@"
