#!/usr/bin/env bash
# Fetch, on this machine, the small wheels the GPU machine lacks (it has PyTorch, numpy,
# pandas, scikit-learn, matplotlib, OpenCV, rich, typer, pytest but not these) into .whl/,
# which .git/info/exclude keeps out of git. Then run benchmarks/gpu_check.sh there with
# `.whl` carried (see the device tool's README).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  grad-cam==1.5.7 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5
# ttach ships as a pure-Python wheel
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl ttach==0.0.3 \
  || python3 -m pip wheel --quiet --no-deps -w .whl ttach==0.0.3
ls -la .whl
