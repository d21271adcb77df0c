#!/usr/bin/env bash
# Before/after pruning sweep: for each model, prune (default 30%, l2, round to 8, default config), then one
# `fgvc-edge bench --checkpoint` run measures the model before pruning and the pruned checkpoint side by side
# (same process, same settings). Rows land in benchmarks/results/prune/<model>.json;
# `python benchmarks/prune_table.py` renders the before/after table.
#
#   bash benchmarks/prune_sweep.sh [MODEL ...]          (default: every registered model)
#   RATIO=0.3 ITERS=10 WARMUP=2 RUNTIMES=torch,onnxruntime bash benchmarks/prune_sweep.sh resnet50
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RATIO=${RATIO:-0.3}
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-2}
RUNTIMES=${RUNTIMES:-torch,onnxruntime}
OUT=${OUT:-benchmarks/results/prune}
mkdir -p "$OUT"
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  mapfile -t models < <("$BIN/python" -c 'from fgvc_edge.models import list_models; print("\n".join(list_models()))')
fi
for m in "${models[@]}"; do
  echo "== $m $(date +%T)"
  ckpt="$OUT/$m.pruned"
  [ -f "$ckpt/fgvc.json" ] || "$BIN/fgvc-edge" prune "$m" --ratio "$RATIO" -o "$ckpt" > "$OUT/$m.prune.log" 2>&1
  "$BIN/fgvc-edge" bench "$m" --checkpoint "$ckpt" --runtimes "$RUNTIMES" --iters "$ITERS" --warmup "$WARMUP" \
      --json "$OUT/$m.json" --markdown "$OUT/$m.md" > "$OUT/$m.log" 2>&1 || echo "   failed: see $OUT/$m.log"
done
echo "== done $(date +%T)"
