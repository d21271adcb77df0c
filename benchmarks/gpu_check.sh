#!/usr/bin/env bash
# GPU check (issue #13), for a machine with PyTorch + CUDA (no TensorRT, no internet needed); < 8 min on one H200.
#
#   bash benchmarks/gpu_check.sh prepare   # HERE (with internet): pure-Python wheels the GPU image lacks → .whl/
#   bash benchmarks/gpu_check.sh           # THERE: device tool `run`, carry [".whl"]; results in $OUT if set
#
# 1. `fgvc-edge bench cmal_resnet50` with PyTorch eager on CUDA (--device cuda), FP32 and FP16 (autocast),
#    batch 1, CUDA-event timing: CMAL-Net RAW and RAW+A_oval and their ResNet50 baseline at Table 9's
#    configuration (448 px, 100 classes); then our RAW/R50 and RAW+A_oval/R50 p50 ratios next to Table 9's
#    (1.56×, 3.04×, measured on an RTX 3080 Ti).
# 2. The `gpu` tests (tests/engine/test_gpu.py): they skip where TensorRT is absent, as on that image.
# The package is not pip-installed there (its torch pin is not the image's): it runs from this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "prepare" ]]; then
    # fvcore (MAC counts) and what it needs beyond the image's packages; all pure Python.
    grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> "$(git rev-parse --git-path info/exclude)"
    "$PY" -m pip wheel --no-deps -q -w .whl fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor
    ls .whl
    exit 0
fi

RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import fvcore" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "fvcore is not installed and no .whl/ was carried: run 'bash benchmarks/gpu_check.sh prepare' first" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/fgvc-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/fgvc-site"
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv

FGVC_EDGE=("$PY" -c "from fgvc_edge.cli import main; main()")
SECONDS=0
timeout 420 "${FGVC_EDGE[@]}" bench cmal_resnet50 --runtimes torch --device cuda --precisions fp32,fp16 \
    --batch 1 --iters 200 --warmup 30 --json "$RESULTS/gpu_bench.json" --markdown "$RESULTS/gpu_bench.md"
echo "bench: ${SECONDS}s"
"$PY" benchmarks/table9_ratios.py "$RESULTS/gpu_bench.json"

# Exit status 5 = nothing collected/ran; skipped tests still exit 0.
timeout 120 "$PY" -m pytest -q -rs -m gpu tests/engine/test_gpu.py -p no:cacheprovider
