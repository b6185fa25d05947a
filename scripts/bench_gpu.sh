#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one command: every benchmark at a realistic size (the Qwen2.5-1.5B architecture
# from its config, random weights, bf16), each against its naive baseline measured in the same run.
#
#   ./scripts/bench_gpu.sh [OUT_DIR]        # default bench-gpu/; one log per benchmark, and nvidia-smi's view
#
# Needs a CUDA GPU and the project's Python (PYTHON=..., default .venv/bin/python). Random weights need no download.
# Each benchmark's last line is `speedup vs naive: N.Nx`; this script prints them together at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-bench-gpu}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench_gpu.sh needs a CUDA GPU.')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.csv" 2>/dev/null || true

ARCH=(--arch qwen2.5-1.5b)
run() {  # name, then the command's arguments
    local name=$1
    shift
    echo "== $name: $*"
    PYTHONUNBUFFERED=1 "$PY" "$@" 2>&1 | tee "$OUT/$name.log"
}
# The paper's setting: 5 few-shot examples (as many as fit), 4 candidates; prefill once per prompt (docs/prefix_sharing.md).
# Each script prints its peak memory (torch.cuda.max_memory_allocated) and prompt tokens encoded per candidate.
run generate scripts/bench_generate.py "${ARCH[@]}" --pairs 256 --candidates 4 --max_new_tokens 512 --naive_pairs 4 \
    --few_shot_examples 5
run generate-unshared scripts/bench_generate.py "${ARCH[@]}" --pairs 64 --candidates 4 --max_new_tokens 512 \
    --naive_pairs 2 --few_shot_examples 5 --unshared_arm
run generate-continuous scripts/bench_generate.py "${ARCH[@]}" --pairs 256 --candidates 4 --max_new_tokens 512 \
    --naive_pairs 4 --few_shot_examples 5 --backend continuous --batch_tokens 1048576
run critic scripts/bench_critic.py "${ARCH[@]}" --pairs 64 --unshared_arm --prefix_cache_tokens 1048576
run sft scripts/bench_sft.py "${ARCH[@]}" --rows 1024

echo
for log in "$OUT"/*.log; do
    printf '%-28s %s\n' "$(basename "$log" .log)" "$(tail -n 1 "$log")"
done
