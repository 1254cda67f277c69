#!/usr/bin/env bash
# The GPU check, in one run under 5 minutes, on a machine with CUDA and its own PyTorch but
# no MLflow / DVC / Optuna (the device tool's H200: Python 3.12, PyTorch 2.11):
#   here:   bash benchmarks/gpu_wheels.sh          # grad-cam, pydantic, ... into .whl/
#   there:  bash benchmarks/gpu_check.sh           # with `.whl` carried; figures in $OUT
# It runs the tests marked gpu (tests/gpu), benchmarks/throughput.py (fp32 / bf16 / fp16 at
# 64, 112 and 224 px against the measured GEMM peak) and the project's cores at 224 px
# (benchmarks/gpu_cores.py), the cost of train.deterministic, and benchmarks/paths.py (predict,
# embeddings and the input pipeline against the training step). Copy every figure into benchmarks/README.md with this command.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/facelens-gpu-check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
status=0
step() { echo "=== $*"; "$@" 2>&1 | tee -a "$out/gpu_check.log" || status=1; }
step nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
step python3 -m pytest -q -p no:cacheprovider tests/gpu -rs
step python3 benchmarks/throughput.py --device cuda --precisions fp32 bf16 fp16 \
  --sizes 64 112 224 --train-sizes 64 112 224 --batch 64 --train-batch 64 --gemm-n 8192 \
  --min-seconds 2
step python3 benchmarks/throughput.py --device cuda --precisions bf16 --sizes --train-sizes 224 \
  --train-batch 64 --gemm-n 8192 --min-seconds 2 --deterministic
step python3 benchmarks/paths.py --device cuda --precisions fp32 bf16 --sizes 112 224 \
  --batch 64 256 --train-batch 64 --gemm-n 8192 --min-seconds 2
step python3 benchmarks/gpu_cores.py --device cuda --precision auto --size 224 \
  --identities 60 --epochs 3 --batch 64 --cams 64
echo "gpu_check exit status: $status" | tee -a "$out/gpu_check.log"
exit "$status"
